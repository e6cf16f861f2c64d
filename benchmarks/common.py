"""Shared benchmark harness: side-by-side timing (warm-up, alternating repeats, median, min-max, ratio)."""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def base_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"],
                    help="fp32, or bf16 (autocast/weights; use on GPUs: ~100x slower on a CPU without bf16 kernels)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per implementation (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs per implementation (default 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    return ap


def setup(args) -> torch.dtype:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if dtype == torch.bfloat16 and args.device == "cpu":
        from smollm2.train import cpu_has_fast_bf16

        if not cpu_has_fast_bf16():
            print("warning: this CPU has no AMX bf16 units: bf16 matmul may be ~100x slower than fp32")
    import transformers

    print(f"# machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}, {args.dtype}")
    return dtype


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
    print(f"  {name:<14} {med:10.2f} {unit}   (min {rates[0]:.2f}, max {rates[-1]:.2f}, n={len(rates)})")
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


def hf_twin(model, device, attn="sdpa"):
    """transformers' LlamaForCausalLM with our model's config and weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {k: v for k, v in model.config.to_dict().items() if k not in ("architectures", "model_type")}
    hf = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation=attn))
    hf.load_state_dict(model.state_dict(), strict=False)
    return hf.to(device)
