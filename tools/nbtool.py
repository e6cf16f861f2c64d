#!/usr/bin/env python3
"""Run and clean the notebooks whose stored outputs `pytest --nbval` compares against.

    python tools/nbtool.py run [NOTEBOOK ...]   # execute in a fresh kernel (cwd notebooks/), save, clean
    python tools/nbtool.py clean [NOTEBOOK ...] # drop volatile metadata, keep outputs/counts/tags
    python tools/nbtool.py check [NOTEBOOK ...] # exit 1 if a notebook is not clean or not fully run

Never use `nbdev-clean`: it nulls execution counts and nbval then fails every cell with output.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NB_DIR = ROOT / "notebooks"
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _notebooks(args):
    return [Path(a).resolve() for a in args] or sorted(NB_DIR.glob("[0-9]*.ipynb"))


def clean_nb(nb: dict) -> dict:
    nb["metadata"] = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}
    seen = set()
    for cell in nb["cells"]:
        # stable cell ids (a hash of the source) so that re-generating a notebook does not churn its diff
        cid = hashlib.sha1("".join(cell["source"]).encode()).hexdigest()[:8]
        while cid in seen:
            cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
        seen.add(cid)
        cell["id"] = cid
        meta = cell.get("metadata", {})   # keep tags and hidden-source flags (exercise solutions)
        cell["metadata"] = {k: meta[k] for k in ("jupyter", "tags") if meta.get(k)}
        if cell["cell_type"] != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        outs = []
        for out in cell.get("outputs", []):
            out.pop("metadata", None) if out.get("output_type") == "stream" else None
            data = out.get("data")
            if data is not None:
                data.pop(WIDGET_VIEW, None)   # random model ids; nbval ignores widget views anyway
                out["metadata"] = {}
                if not data:
                    continue
            outs.append(out)
        cell["outputs"] = outs
    return nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def clean(paths) -> None:
    for p in paths:
        nb = json.loads(p.read_text(encoding="utf-8"))
        p.write_text(_dump(clean_nb(nb)), encoding="utf-8")


def check(paths) -> int:
    bad = 0
    for p in paths:
        text = p.read_text(encoding="utf-8")
        nb = json.loads(text)
        if _dump(clean_nb(json.loads(text))) != text:
            print(f"{p.name}: not clean (run `python tools/nbtool.py clean {p.name}`)")
            bad += 1
        unrun = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"
                 and c.get("execution_count") is None and "".join(c["source"]).strip()]
        if unrun:
            print(f"{p.name}: code cells {unrun} have no execution count (re-run the notebook)")
            bad += 1
    return 1 if bad else 0


def run(paths) -> None:
    import nbformat
    from nbclient import NotebookClient

    for p in paths:
        t0 = time.time()
        nb = nbformat.read(p, as_version=4)
        NotebookClient(nb, timeout=1800, kernel_name="python3",
                       resources={"metadata": {"path": str(p.parent)}}).execute()
        nbformat.write(nb, p)
        clean([p])
        print(f"ran {p.name} in {time.time() - t0:.0f} s")


def main(argv):
    if not argv or argv[0] not in ("run", "clean", "check"):
        print(__doc__)
        return 2
    paths = _notebooks(argv[1:])
    if argv[0] == "run":
        run(paths)
    elif argv[0] == "clean":
        clean(paths)
    else:
        return check(paths)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
