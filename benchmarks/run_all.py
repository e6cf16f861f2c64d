"""Run every benchmark, print one summary table (benchmark, ours, reference, ratio, CPU) and save it as JSON.

    python benchmarks/run_all.py                  # the full measurement (make bench)
    python benchmarks/run_all.py --quick          # shorter settings, same comparisons
    python benchmarks/run_all.py --smoke          # tiny settings: checks the plumbing, figures mean nothing
    python benchmarks/run_all.py --only train_step --threads 2 --repeats 3     # other flags go to every script
    python benchmarks/run_all.py --compare benchmarks/results/*.json           # ratios of saved runs side by side

Each run is written to benchmarks/results/<UTC time>_<cpu>_<mode>.json (git-ignored) with the machine
(lscpu model name, the CPU flags that matter, torch's kernel level, threads) in its content.
"""
import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from common import cpu_slug

HERE = Path(__file__).resolve().parent
SCRIPTS = ("train_step", "decode", "forward")
SETTINGS = {   # per mode: the flags each script gets (flags given to run_all.py come after and win)
    "full": {"train_step": [], "decode": ["--int8"], "forward": []},
    "quick": {"train_step": ["--batch-size", "2", "--seq-len", "256", "--repeats", "3"],
              "decode": ["--int8", "--new-tokens", "32", "--repeats", "3"],
              "forward": ["--lengths", "128,512", "--repeats", "3"]},
    "smoke": {"train_step": ["--batch-size", "1", "--seq-len", "32", "--repeats", "1", "--no-memory"],
              "decode": ["--int8", "--new-tokens", "4", "--repeats", "1"],
              "forward": ["--lengths", "32", "--repeats", "1"]},
}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog="Any other flag (--device, --dtype, "
                                 "--threads, --repeats, --warmup) is passed to every script.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="train 2x256, decode 32 tokens, forward 128/512; 3 repeats")
    mode.add_argument("--smoke", action="store_true", help="tiny sizes, 1 repeat, no memory runs: a plumbing check")
    ap.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated subset of {','.join(SCRIPTS)}")
    ap.add_argument("--out", type=Path, default=HERE / "results",
                    help="folder for the JSON (default benchmarks/results)")
    ap.add_argument("--compare", nargs="+", type=Path, metavar="JSON", help="print saved runs side by side and exit")
    args, rest = ap.parse_known_args()
    args.only = [s.strip().removesuffix(".py") for s in args.only.split(",") if s.strip()]
    if not args.only or any(s not in SCRIPTS for s in args.only):
        ap.error(f"--only: expected a comma-separated subset of {','.join(SCRIPTS)}, got {','.join(args.only)!r}")
    args.mode = "quick" if args.quick else "smoke" if args.smoke else "full"
    return args, rest


def run_script(name: str, flags: list[str]) -> dict | None:
    """Run one benchmark script (output streamed); its JSON document, or None if it failed."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        print(f"\n$ python benchmarks/{name}.py {' '.join(flags)}", flush=True)
        rc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *flags, "--json", str(out)]).returncode
        if rc != 0 or not out.exists():
            print(f"!! benchmarks/{name}.py failed (exit status {rc})", flush=True)
            return None
        return json.loads(out.read_text())


def fmt(x: float, unit: str) -> str:
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:,.1f} {unit}"


def ratio_text(row: dict) -> str:
    return f"{row['ratio']:.2f}×" + (" (lower is better)" if row["lower_is_better"] else "")


def table(rows: list[dict]) -> str:
    """The summary as a Markdown table (pastes into README.md's speed table); a row's note goes in brackets after
    its name (the bandwidth rows: bytes a token and the measured GB/s, so the share reads with its basis)."""
    lines = ["| benchmark | ours | reference | ours / reference | CPU |", "|---|---|---|---|---|"]
    for r in rows:
        name = f"{r['benchmark']} ({r['note']})" if r.get("note") else r["benchmark"]   # e.g. MB a token, GB/s
        lines.append(f"| {name} | {r['ours_name']}: {fmt(r['ours'], r['unit'])} | "
                     f"{r['reference_name']}: {fmt(r['reference'], r['unit'])} | {ratio_text(r)} | {r['cpu']} |")
    return "\n".join(lines)


def compare(paths: list[Path]):
    """Ratios of saved runs side by side: one column per file (CPU, mode), one row per benchmark."""
    runs = []
    for p in paths:
        try:
            runs.append(json.loads(p.read_text()))
            runs[-1]["rows"], runs[-1]["machine"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SystemExit(f"--compare: {p} is not a results file written by run_all.py ({e!r})")
    names = list(dict.fromkeys(r["benchmark"] for run in runs for r in run["rows"]))
    heads = [f"{run['machine'].get('short', run['machine']['label'])} [{run['mode']}, {run['timestamp'][:16]}]"
             for run in runs]
    print("| benchmark | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(runs))
    for name in names:
        cells = []
        for run in runs:
            row = next((r for r in run["rows"] if r["benchmark"] == name), None)
            cells.append(ratio_text(row) if row else "–")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main():
    args, rest = parse_args()
    if args.compare:
        return compare(args.compare)
    started = datetime.now(timezone.utc)
    rows, docs, failed = [], {}, []
    for name in args.only:
        doc = run_script(name, SETTINGS[args.mode][name] + rest)
        if doc is None:
            failed.append(name)
            continue
        docs[name] = doc
        rows += [{"script": f"{name}.py", **r, "cpu": doc["machine"]["short"]} for r in doc["rows"]]
    if not docs:
        raise SystemExit("every benchmark failed: nothing to summarise")
    first = next(iter(docs.values()))
    print(f"\n## Summary ({args.mode} mode; ratio = ours / reference, same process, alternating repeats)\n")
    print(table(rows))
    if failed:
        print(f"\nFAILED: {', '.join(failed)} (see the output above)")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started:%Y%m%d-%H%M%S}_{cpu_slug(first['machine'])}_{args.mode}.json"
    path.write_text(json.dumps({"timestamp": started.isoformat(timespec="seconds"), "mode": args.mode,
                                "command": " ".join(["python", "benchmarks/run_all.py", *sys.argv[1:]]),
                                "machine": first["machine"], "python": platform.python_version(),
                                "torch": first["torch"], "transformers": first["transformers"],
                                "settings": {n: d["argv"] for n, d in docs.items()}, "failed": failed,
                                "rows": rows}, indent=1))
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
