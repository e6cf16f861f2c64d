"""Shared benchmark harness: side-by-side timing (warm-up, alternating repeats, median, min-max, ratio),
the CPU a result was measured on, and result rows that `run_all.py` gathers into one table."""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

# the CPU features that decide which kernels torch can use: AVX2 / AVX-512 fp32 GEMM, bf16 and int8 dot
# products (AVX512_BF16, AVX512_VNNI) and the AMX tile units (bf16 / int8 matrix multiply)
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="fp32, or bf16 (autocast/weights; use on GPUs: ~100x slower on a CPU without bf16 kernels)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per implementation (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per implementation (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--json", metavar="PATH", default=None,
                    help="also write the result rows and the machine to this JSON file (run_all.py uses it)")
    return ap


def setup(args) -> torch.dtype:
    """Apply --threads, check --device, print the machine line; the dtype for --dtype."""
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if dtype == torch.bfloat16 and args.device == "cpu":
        info = cpu_info()
        if not info["amx"] and "avx512_bf16" not in info["flags"]:
            print("warning: this CPU has neither AMX nor AVX512_BF16: bf16 matmul may be ~100x slower than fp32")
        elif not info["amx"]:
            print("note: no AMX on this CPU; bf16 matmul runs on AVX512_BF16 dot products (see the matmul ceiling)")
    import transformers

    print(f"# machine: {machine(args.device)['label']}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}, device {args.device}, {args.dtype}")
    return dtype


def _cpu_fields() -> tuple[str, set[str]]:
    """(model name, flag set) from `lscpu`, else /proc/cpuinfo, else platform."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"},
                             timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "Model name" in fields:
            return fields["Model name"], set(fields.get("Flags", "").split())
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info = dict(l.split(":", 1) for l in f.read().split("\n\n")[0].splitlines() if ":" in l)
        info = {k.strip(): v.strip() for k, v in info.items()}
        return info.get("model name", platform.processor()), set(info.get("flags", "").split())
    except (OSError, ValueError):
        return platform.processor() or platform.machine(), set()


def cpu_info() -> dict:
    """The CPU a figure was measured on: model name, the flags that matter, torch's kernel level, threads."""
    name, flags = _cpu_fields()
    have = [f for f in CPU_FLAGS if f in flags]
    amx = "amx_tile" in flags
    capability = torch.backends.cpu.get_cpu_capability()
    threads = torch.get_num_threads()
    label = (f"{name} ({' '.join(have) or 'no AVX2'}{'' if amx else ', no AMX'}; torch {capability}; "
             f"{threads} thread{'s' if threads != 1 else ''})")
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    isa += "".join(f"+{n}" for f, n in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI")) if f in flags)
    isa += ", AMX" + ("-bf16" if "amx_bf16" in flags else "") if amx else ", no AMX"
    return {"model_name": name, "flags": have, "missing_flags": [f for f in CPU_FLAGS if f not in flags],
            "amx": amx, "torch_capability": capability, "threads": threads, "logical_cpus": os.cpu_count(),
            "label": label, "short": f"{name}, {isa}, {threads} thr"}


def machine(device: str = "cpu") -> dict:
    """cpu_info(), plus the GPU's name as the label when the benchmark runs on CUDA."""
    info = cpu_info()
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["label"] = f"{info['gpu']} (host: {info['label']})"
        info["short"] = info["gpu"]
    return info


def cpu_slug(info: dict) -> str:
    """A short file-name-safe tag for a CPU, e.g. 'amd-epyc_avx512-bf16' or 'intel-xeon_avx512-amx'."""
    name = "".join(c if c.isalnum() else "-" for c in info["model_name"].lower())
    name = "-".join(w for w in name.split("-") if w and w not in ("r", "tm", "cpu", "processor"))[:32]
    level = ("avx512" if "avx512f" in info["flags"] else "avx2" if "avx2" in info["flags"] else "noavx2")
    level += "-amx" if info["amx"] else "-bf16" if "avx512_bf16" in info["flags"] else ""
    return f"{name or 'cpu'}_{level}"


class Results:
    """Result rows of one benchmark script: printed as RATIO lines and, with --json, written to a file."""

    def __init__(self, script: str, args):
        self.script, self.args, self.rows = script, args, []

    def add(self, benchmark: str, ours: float, reference: float, unit: str, ours_name: str = "ours",
            reference_name: str = "transformers", lower_is_better: bool = False, note: str = ""):
        self.rows.append({"benchmark": benchmark, "ours_name": ours_name, "ours": ours,
                          "reference_name": reference_name, "reference": reference, "unit": unit,
                          "ratio": ours / reference if reference else float("nan"),
                          "lower_is_better": lower_is_better, "note": note})

    def finish(self):
        """Print every row as `RATIO ...` and write the JSON file if --json was given."""
        for r in self.rows:
            better = "lower is better" if r["lower_is_better"] else "higher is better"
            print(f"RATIO {r['benchmark']}: {r['ours_name']} / {r['reference_name']} = {r['ratio']:.3f}x "
                  f"({r['ours']:,.1f} vs {r['reference']:,.1f} {r['unit']}; {better})")
        if self.args.json:
            import transformers

            doc = {"script": self.script, "argv": vars(self.args), "machine": machine(self.args.device),
                   "torch": torch.__version__, "transformers": transformers.__version__, "rows": self.rows}
            Path(self.args.json).write_text(json.dumps(doc, indent=1))


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def side_by_side(fns: dict, repeats: int, warmup: int, device: str) -> dict[str, list[float]]:
    """Run each callable `warmup` times, then `repeats` rounds alternating between them; seconds per call."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
            sync(device)
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return times


def summary(name: str, seconds: list[float], work: float, unit: str) -> float:
    """Print median and min-max of `work / seconds`; return the median rate."""
    rates = sorted(work / s for s in seconds)
    med = statistics.median(rates)
    print(f"  {name:<28} {med:10.2f} {unit}   (min {rates[0]:.2f}, max {rates[-1]:.2f}, n={len(rates)})")
    return med


def matmul_ceiling(shapes, device: str, dtype: torch.dtype, repeats: int = 5) -> float:
    """Best GFLOP/s of plain matmuls at the model's shapes, measured now on this machine."""
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - t0) / 1e9)
    return best


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far: CUDA allocator peak on GPUs, peak RSS on CPU."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    try:  # VmHWM: this process image's peak resident set (ru_maxrss would carry over the parent's peak)
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

