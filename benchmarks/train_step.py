"""Training step (forward + backward + AdamW), SmolLM2-135M, ours vs transformers, side by side.

    python benchmarks/train_step.py                   # batch 4 x 512, fp32, CPU (the seed's setting)
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch 16 --seq 2048

Timing alternates between the two models in one process. Peak memory is measured in two fresh
subprocesses (one per implementation, same script with --memory-only), since a CPU process's peak RSS
cannot be reset.
"""
import argparse
import json
import subprocess
import sys

import torch

from common import base_parser, hf_twin, matmul_ceiling, peak_memory_mb, setup, side_by_side, summary

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from smollm2 import LlamaForCausalLM, SmolLM2Config  # noqa: E402


def make_step(model, ids, ours: bool, dtype, device):
    # ours: the fused AdamW kernel (one pass over each tensor); transformers: torch's default (foreach)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01,
                            fused=True if ours else None)
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def step():
        with autocast:
            out = model(ids, labels=ids, return_logits=False) if ours else model(ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(which: str, device: str):
    torch.manual_seed(0)
    ours = LlamaForCausalLM(SmolLM2Config()).to(device)
    if which == "ours":
        return ours
    hf = hf_twin(ours, device)
    del ours
    return hf


def main():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--memory-only", choices=["ours", "transformers"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_only:                       # child process: 2 steps, report peak memory
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        if args.threads:
            torch.set_num_threads(args.threads)
        model = build(args.memory_only, args.device).train()
        ids = torch.randint(0, 49152, (args.batch, args.seq), device=args.device)
        step = make_step(model, ids, args.memory_only == "ours", dtype, args.device)
        step(); step()
        print(json.dumps({"peak_mb": peak_memory_mb(args.device)}))
        return
    dtype = setup(args)
    tokens = args.batch * args.seq
    ceiling = matmul_ceiling([(tokens, 576, 1536), (tokens, 1536, 576), (tokens, 576, 576), (tokens, 576, 49152)],
                             args.device, dtype)
    ours = build("ours", args.device).train()
    theirs = hf_twin(ours, args.device).train()
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    fns = {"ours": make_step(ours, ids, True, dtype, args.device),
           "transformers": make_step(theirs, ids, False, dtype, args.device)}
    times = side_by_side(fns, args.repeats, args.warmup, args.device)
    flops_per_token = 6 * sum(p.numel() for p in ours.parameters()) + 12 * 30 * 576 * args.seq
    print(f"train step, batch {args.batch} x {args.seq}: tokens/s (median of {args.repeats}, alternating)")
    rate = {n: summary(n, t, tokens, "tok/s") for n, t in times.items()}
    for n, r in rate.items():
        print(f"  {n:<14} {r * flops_per_token / 1e9:10.1f} GFLOP/s achieved "
              f"({100 * r * flops_per_token / 1e9 / ceiling:.0f}% of the {ceiling:.0f} GFLOP/s matmul ceiling measured now)")
    del ours, theirs, fns
    peak = {}
    for n in ("ours", "transformers"):
        cmd = [sys.executable, __file__, "--memory-only", n, "--device", args.device, "--dtype", args.dtype,
               "--batch", str(args.batch), "--seq", str(args.seq)] + (["--threads", str(args.threads)] if args.threads else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        peak[n] = json.loads(out)["peak_mb"]
        print(f"  {n:<14} peak memory {peak[n]:,.0f} MB ({'CUDA allocator' if args.device != 'cpu' else 'process RSS, 2 steps'})")
    print(f"RATIO ours/transformers: speed {rate['ours'] / rate['transformers']:.3f}x, "
          f"peak memory {peak['ours'] / peak['transformers']:.3f}x")

if __name__ == "__main__":
    main()
