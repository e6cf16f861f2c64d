"""Training step (forward + backward + clip + AdamW), SmolLM2-135M, ours vs transformers, side by side.

    python benchmarks/train_step.py                   # batch 4 x 512, fp32, CPU, every variant below
    python benchmarks/train_step.py --batch-size 2 --seq-len 256 --repeats 3 --no-memory     # ~4x shorter
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch 16 --seq 2048

Both sides get the same optimizer (torch's fused AdamW wherever torch has it: CPU and CUDA), dtype, threads,
data, gradient clipping and loss (mean next-token cross-entropy in float32). Variants (--variants):
  ours                        fused chunked loss (return_logits=False) + lean SwiGLU backward: what the trainer runs
  ours-plain-loss             ours called like transformers: full logits, F.cross_entropy (lean SwiGLU kept)
  ours-plain                  ... and autograd's SwiGLU backward instead of ours: neither extra
  transformers                LlamaForCausalLM(labels=...), fused AdamW
  transformers-default-adamw  the same with torch's default AdamW (CPU: for-loop; CUDA: foreach), the old baseline
Timing alternates between the variants in one process (the three "ours" variants share one model and optimizer,
the transformers ones one model). Peak memory is measured in fresh subprocesses (one per variant, same script
with --memory-only), since a CPU process's peak RSS cannot be reset.
"""
import argparse
import contextlib
import json
import subprocess
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F

from common import Results, base_parser, matmul_ceiling, peak_memory_mb, setup, side_by_side, summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smollm2 import LlamaForCausalLM, SmolLM2Config, to_transformers  # noqa: E402
from smollm2.model import LlamaMLP  # noqa: E402

VARIANTS = ("ours", "ours-plain-loss", "ours-plain", "transformers", "transformers-default-adamw")


def fused_adamw_supported(device: str) -> bool:
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        return device.split(":")[0] in _get_fused_kernels_supported_devices()
    except ImportError:
        return device.startswith("cuda")


def make_optimizer(model, fused: bool):
    hp = dict(lr=3e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    if fused:
        hp["fused"] = True      # else torch's default: foreach on CUDA, a per-tensor for-loop on a CPU
    return torch.optim.AdamW(model.parameters(), **hp)


def _autograd_swiglu(self, x):
    """transformers' LlamaMLP forward: autograd keeps every intermediate (no hand-written backward)."""
    return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@contextlib.contextmanager
def plain_mlp(model):
    """Run our model's MLPs with autograd's SwiGLU backward instead of the lean hand-written one."""
    mlps = [m for m in model.modules() if isinstance(m, LlamaMLP)]
    if not mlps:
        raise SystemExit("ours-plain: found no smollm2.model.LlamaMLP in the model to run without the lean backward")
    for m in mlps:
        m.forward = types.MethodType(_autograd_swiglu, m)
    try:
        yield
    finally:
        for m in mlps:
            del m.forward


def make_step(model, ids, variant: str, opt, dtype, device):
    """One training step of `variant` (see the module docstring) on `model` with optimizer `opt`."""
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)

    def step():
        with autocast, plain_mlp(model) if variant == "ours-plain" else contextlib.nullcontext():
            if variant == "ours":
                out = model(ids, labels=ids, return_logits=False)
            else:   # full logits, then the loss from them in fp32: transformers' way (ours: causal_lm_loss)
                out = model(ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def build(side: str, device: str):
    torch.manual_seed(0)
    ours = LlamaForCausalLM(SmolLM2Config()).to(device)
    if side == "ours":
        return ours
    hf = to_transformers(ours)                                     # on ours' device, in train mode
    del ours
    return hf


def parse_variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {', '.join(VARIANTS)}; got {text!r}")
    return names


def parse_args():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--batch", "--batch-size", dest="batch", type=int, default=4, help="sequences per step (default 4)")
    ap.add_argument("--seq", "--seq-len", dest="seq", type=int, default=512, help="tokens per sequence (default 512)")
    ap.add_argument("--variants", type=parse_variants, default=None,
                    help=f"comma-separated subset of {','.join(VARIANTS)} (default: all; bf16 drops ours-plain, "
                         "which runs the same code as ours-plain-loss under autocast)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses (one per variant)")
    ap.add_argument("--memory-only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch < 1 or args.seq < 2:
        ap.error(f"--batch-size must be >= 1 and --seq-len >= 2, got {args.batch} and {args.seq}")
    if args.variants is None:
        args.variants = [v for v in VARIANTS if not (v == "ours-plain" and args.dtype == "bf16")]
    return args


def memory_child(args):
    """Fresh process: build one variant, run 2 steps, print its peak memory as JSON."""
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    v = args.memory_only
    model = build("ours" if v.startswith("ours") else "transformers", args.device).train()
    ids = torch.randint(0, 49152, (args.batch, args.seq), device=args.device)
    opt = make_optimizer(model, fused_adamw_supported(args.device) and v != "transformers-default-adamw")
    step = make_step(model, ids, v, opt, dtype, args.device)
    step(); step()
    print(json.dumps({"peak_mb": peak_memory_mb(args.device)}))


def peak_memory(args) -> dict[str, float]:
    peak = {}
    for v in args.variants:
        cmd = [sys.executable, __file__, "--memory-only", v, "--device", args.device, "--dtype", args.dtype,
               "--batch", str(args.batch), "--seq", str(args.seq)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        peak[v] = json.loads(out)["peak_mb"]
        print(f"  {v:<28} peak memory {peak[v]:,.0f} MB "
              f"({'CUDA allocator' if args.device != 'cpu' else 'process RSS, 2 steps'})")
    return peak


def time_variants(args, dtype) -> tuple[dict[str, list[float]], int]:
    """Seconds per step of every variant, alternating in this process; the model's parameter count."""
    ours = build("ours", args.device).train()
    theirs = to_transformers(ours)                                 # train mode, like ours
    fused = fused_adamw_supported(args.device)
    print(f"optimizer: AdamW(lr 3e-4, betas (0.9, 0.95), wd 0.01), {'fused' if fused else 'default (no fused kernel)'} "
          f"for ours and transformers; clip_grad_norm_ 1.0")
    opts = {"ours": make_optimizer(ours, fused), "transformers": make_optimizer(theirs, fused),
            "transformers-default-adamw": make_optimizer(theirs, False)}
    ids = torch.randint(0, 49152, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    fns = {v: make_step(ours if v.startswith("ours") else theirs, ids, v,
                        opts["ours" if v.startswith("ours") else v], dtype, args.device) for v in args.variants}
    return side_by_side(fns, args.repeats, args.warmup, args.device), sum(p.numel() for p in ours.parameters())


def add_rows(res: Results, args, rate: dict, peak: dict, pct: dict):
    what = f"train step {args.dtype} {args.batch}x{args.seq}"
    rows = [("ours", "transformers", "same fused AdamW"),
            ("ours-plain-loss", "transformers", "ours without the fused loss"),
            ("ours-plain", "transformers", "ours without fused loss and lean SwiGLU"),
            ("ours", "transformers-default-adamw", "transformers on default AdamW (old baseline)")]
    for a, b, label in rows:
        if a in rate and b in rate:
            res.add(f"{what}, {label}", rate[a], rate[b], "tok/s", a, b,
                    note=f"{a} {pct[a]:.0f}%, {b} {pct[b]:.0f}% of the matmul ceiling")
    for a, b, label in rows[:3]:
        if a in peak and b in peak:
            res.add(f"{what} peak memory, {label.replace('same fused AdamW', 'same optimizer')}", peak[a], peak[b],
                    "MB", a, b, lower_is_better=True)


def main():
    args = parse_args()
    if args.memory_only:
        return memory_child(args)
    dtype = setup(args)
    tokens = args.batch * args.seq
    ceiling = matmul_ceiling([(tokens, 576, 1536), (tokens, 1536, 576), (tokens, 576, 576), (tokens, 576, 49152)],
                             args.device, dtype)
    times, n_params = time_variants(args, dtype)
    flops_per_token = 6 * n_params + 12 * 30 * 576 * args.seq
    print(f"train step, batch {args.batch} x {args.seq}: tokens/s (median of {args.repeats}, alternating)")
    rate = {n: summary(n, t, tokens, "tok/s") for n, t in times.items()}
    pct = {n: 100 * r * flops_per_token / 1e9 / ceiling for n, r in rate.items()}
    for n, r in rate.items():
        print(f"  {n:<28} {r * flops_per_token / 1e9:10.1f} GFLOP/s achieved "
              f"({pct[n]:.0f}% of the {ceiling:.0f} GFLOP/s matmul ceiling measured now)")
    peak = {} if args.no_memory else peak_memory(args)
    res = Results("train_step.py", args)
    add_rows(res, args, rate, peak, pct)
    res.finish()


if __name__ == "__main__":
    main()
