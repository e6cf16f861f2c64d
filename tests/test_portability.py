"""Stored notebook outputs must not depend on the CPU (issue: `make test` on every x86-64 CPU).

Two guards. A static one reads every output that nbval compares and rejects what another CPU would print
differently: raw float noise, timings, speeds, percentages. A dynamic one, `make test-kernels`, re-runs the
notebooks under other kernels (`tools/kernel_env.py`); the test below proves that it catches a planted
fragile output and lets the same check pass once it prints a verdict.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from kernel_env import kernel_env  # noqa: E402

NOISE = {
    "a raw float difference": re.compile(r"\b\d\.\d+e-(0[4-9]|[1-9]\d)\b"),
    "a float printed to 8+ digits": re.compile(r"\d\.\d{7,}"),
    "a timing": re.compile(r"\b\d+(\.\d+)? ?(ms|µs|us|s|sec|seconds)\b(?!\w)"),
    "a speed": re.compile(r"(tok(ens)?|tasks|it|GFLOP)/s\b"),
    "a percentage": re.compile(r"\b\d+(\.\d+)?\s?%"),
}
MARKERS = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")


def compared_outputs(path: Path):
    """(cell index, text) of every output nbval compares: code cells not marked ignore/skip."""
    for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        src = "".join(cell["source"])
        if cell["cell_type"] != "code" or any(line.strip() in MARKERS for line in src.splitlines()):
            continue
        for out in cell.get("outputs", []):
            yield i, "".join(out.get("text", "")) + "".join(out.get("data", {}).get("text/plain", ""))


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")))
def test_compared_outputs_do_not_depend_on_the_cpu(notebook):
    found = [f"cell {i}: {what} {m.group(0)!r} in {text.strip()[:120]!r}"
             for i, text in compared_outputs(ROOT / "notebooks" / notebook)
             for what, pattern in NOISE.items() if (m := pattern.search(text))]
    assert not found, "print a verdict against a tolerance, or mark the cell # NBVAL_IGNORE_OUTPUT:\n" + "\n".join(found)


def test_the_static_guard_flags_each_kind_of_noise(tmp_path):
    outputs = ["max |ours - naive| = 2.1e-07", "loss 11.30470085144043", "cached load in 0.8 s",
               "35.3 tok/s", "top-1 agreement: verse 77%"]
    cells = [{"cell_type": "code", "source": ["print(0)"], "metadata": {}, "execution_count": 1,
              "outputs": [{"output_type": "stream", "name": "stdout", "text": [o]}]} for o in outputs]
    cells.append({**cells[0], "source": ["# NBVAL_IGNORE_OUTPUT\n", "print(0)"]})     # ignored: allowed
    cells.append({**cells[0], "outputs": [{"output_type": "stream", "name": "stdout",
                                           "text": ["max |ours - naive| < 1e-5 ✓ after 80 steps"]}]})
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps({"cells": cells}))
    flagged = {i for i, text in compared_outputs(path) if any(p.search(text) for p in NOISE.values())}
    assert flagged == set(range(len(outputs)))


FRAGILE = """import torch
torch.manual_seed(0)
q, k, v = torch.randn(2, 9, 200, 64), torch.randn(2, 3, 200, 64), torch.randn(2, 3, 200, 64)
fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
kk, vv = k.repeat_interleave(3, 1), v.repeat_interleave(3, 1)
w = (q @ kk.transpose(-2, -1) / 8).masked_fill(torch.ones(200, 200).triu(1).bool(), float("-inf")).softmax(-1)
diff = (fused - w @ vv).abs().max().item()
x = torch.randn(256, 576) @ torch.randn(576, 1536)
"""
RAW = "print('max |fused - naive| =', repr(diff), '; matmul sum', repr(x.sum().item()))"
VERDICT = "assert diff < 1e-5\nprint('max |fused - naive| < 1e-5 ✓')"


def _notebook(path: Path, *cells: str):
    nb = {"cells": [{"cell_type": "code", "source": code.splitlines(keepends=True), "metadata": {},
                     "execution_count": None, "outputs": []} for code in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))


def _run(args, cwd, extra_env=None):
    env = {**os.environ, **(extra_env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_kernel_guard_catches_a_planted_fragile_output(tmp_path):
    """Store outputs under this machine's kernels, then compare them under `tools/kernel_env.py`'s.

    One notebook (one kernel start per run): cell 0 computes, cell 1 prints the raw figures (fragile),
    cell 2 asserts and prints a verdict (robust)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    _notebook(tmp_path / "planted.ipynb", FRAGILE, RAW, VERDICT)
    ran = _run([str(ROOT / "tools" / "nbtool.py"), "run", str(tmp_path / "planted.ipynb")], tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    nbval = ["-m", "pytest", "--nbval", "--nbval-current-env", "-p", "no:cacheprovider", "-q", "-rf",
             "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), "planted.ipynb"]
    same = _run(nbval, tmp_path)                                               # same machine, same kernels
    assert same.returncode == 0 and "3 passed" in same.stdout, same.stdout + same.stderr
    other = _run(nbval, tmp_path, kernel_env())                                # other kernels: the raw print fails
    assert other.returncode == 1 and "1 failed, 2 passed" in other.stdout, other.stdout + other.stderr
    assert "FAILED planted.ipynb::Cell 1" in other.stdout, other.stdout
