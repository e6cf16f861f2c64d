"""Where one fp32 batch-1 decode step of ours spends its time: torch.profiler over `--steps` decode steps.

    python benchmarks/profile_decode.py --threads 2            # real SmolLM2-135M-Instruct weights, 20 steps

Prefills a 15-token prompt, warms up, then profiles `--steps` single-token steps (`decode_one_token`, greedy
argmax) and prints the top ops by self CPU time, their share of the profiled wall time, and the ms per step.
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import smollm2  # noqa: E402
from smollm2.model import decode_one_token  # noqa: E402
from smollm2.weights import resolve_source  # noqa: E402

PROMPT = "The history of the Roman Empire is long and complicated. In the beginning,"


def steps(model, cache, tok, n: int):
    for _ in range(n):
        tok = decode_one_token(model, tok, cache).argmax(-1)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--steps", type=int, default=20, help="profiled decode steps (default 20)")
    ap.add_argument("--top", type=int, default=15, help="ops printed (default 15)")
    args = ap.parse_args()
    if args.steps < 1 or args.top < 1:
        ap.error(f"--steps and --top must be >= 1, got {args.steps} and {args.top}")
    if args.threads:
        torch.set_num_threads(args.threads)
    model = smollm2.from_pretrained(resolve_source("smollm2-135m-instruct")).eval()
    ids = smollm2.load_tokenizer("smollm2-135m-instruct").encode(PROMPT, return_tensors="pt")
    with torch.inference_mode():
        cache = model.new_cache(1, ids.shape[1] + 3 * args.steps + 8)
        tok = model(ids, cache=cache, logits_to_keep=1).logits[:, -1].argmax(-1)
        tok = steps(model, cache, tok, args.steps)                                 # warm-up
        t0 = time.perf_counter()
        tok = steps(model, cache, tok, args.steps)
        plain = (time.perf_counter() - t0) / args.steps
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            steps(model, cache, tok, args.steps)
            wall = time.perf_counter() - t0
    print(f"{torch.get_num_threads()} threads; unprofiled {plain * 1e3:.2f} ms/step ({1 / plain:.1f} tok/s), "
          f"profiled {wall / args.steps * 1e3:.2f} ms/step")
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total_self = sum(e.self_cpu_time_total for e in rows)
    print(f"{'op':<36} {'calls/step':>10} {'self ms/step':>12} {'% of step':>9}")
    for e in rows[:args.top]:
        print(f"{e.key[:36]:<36} {e.count / args.steps:10.1f} {e.self_cpu_time_total / 1e3 / args.steps:12.3f} "
              f"{e.self_cpu_time_total / 1e6 / wall:9.1%}")
    print(f"{'all ops (self time)':<36} {sum(e.count for e in rows) / args.steps:10.1f} "
          f"{total_self / 1e3 / args.steps:12.3f} {total_self / 1e6 / wall:9.1%}")
    print(f"outside any op (Python, dispatch): {1 - total_self / 1e6 / wall:.1%} of the profiled step")


if __name__ == "__main__":
    main()
