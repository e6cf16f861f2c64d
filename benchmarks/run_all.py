"""Run every benchmark in turn (each prints its ratio ours/transformers last)."""
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for script, extra in [("train_step.py", []), ("decode.py", ["--int8"]), ("forward.py", [])]:
    print(f"\n$ python benchmarks/{script} {' '.join(extra)}", flush=True)
    subprocess.run([sys.executable, str(HERE / script), *extra, *sys.argv[1:]], check=True)
