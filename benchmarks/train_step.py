"""Training step (forward + backward + clip + AdamW), SmolLM2-135M, ours vs transformers, side by side.

    python benchmarks/train_step.py                   # batch 4 x 512, fp32, CPU, every variant below
    python benchmarks/train_step.py --batch-size 2 --seq-len 256 --repeats 3 --no-memory     # ~4x shorter
    python benchmarks/train_step.py --device cuda --dtype bf16 --batch 16 --seq 2048 --compile --jsonl figures.jsonl
    python benchmarks/train_step.py --smoke          # a tiny model, 1 repeat: checks the script runs (seconds)

Both sides get the same optimizer (torch's fused AdamW wherever torch has it: CPU and CUDA), dtype, threads,
data, gradient clipping and loss (mean next-token cross-entropy in float32). Variants (--variants):
  ours                        fused chunked loss (return_logits=False) + lean SwiGLU backward: what the trainer runs
  ours-plain-loss             ours called like transformers: full logits, F.cross_entropy (lean SwiGLU kept)
  ours-plain                  ... and autograd's SwiGLU backward instead of ours: neither extra
  transformers                LlamaForCausalLM(labels=...), fused AdamW
  transformers-default-adamw  the same with torch's default AdamW (CPU: for-loop; CUDA: foreach), the old baseline
With --compile both models go through torch.compile (inductor) first (ours-plain is left out: swapping the MLP's
forward in and out would recompile every step). MFU is the achieved FLOP/s (6 N + 12 L d T per token) over the
GPU's dense bf16 peak (--peak-tflops; known for H100/H200/A100 by name); on a CPU the matmul ceiling measured in
the run stands in for the peak. --jsonl appends one JSON line per figure (gpu_check.sh collects them).
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


SMOKE_CONFIG = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=256)
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}      # dense, SXM parts


def model_config(args) -> SmolLM2Config:
    return SmolLM2Config(**SMOKE_CONFIG) if args.smoke else SmolLM2Config()


def peak_tflops(args) -> float | None:
    """--peak-tflops, else the dense bf16 peak of a GPU known by name, else None (CPU: the measured ceiling)."""
    if args.peak_tflops or not args.device.startswith("cuda"):
        return args.peak_tflops
    name = torch.cuda.get_device_name(torch.device(args.device))
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def build(side: str, device: str, config: SmolLM2Config | None = None):
    torch.manual_seed(0)
    ours = LlamaForCausalLM(config or SmolLM2Config()).to(device)
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
    ap.add_argument("--compile", action="store_true", help="torch.compile (inductor) both models first (no memory)")
    ap.add_argument("--smoke", action="store_true", help="a tiny model at 2 x 64, 1 repeat, no memory: checks the script runs")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense bf16 peak for MFU (default: known for H100/H200/A100 by name)")
    ap.add_argument("--jsonl", metavar="PATH", default=None, help="append one JSON line per figure to PATH")
    ap.add_argument("--flash-check", action="store_true",
                    help="only check that a bf16 train step of ours runs with SDPA limited to flash attention (CUDA)")
    ap.add_argument("--memory-only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.repeats, args.warmup, args.no_memory, args.batch, args.seq = 1, 1, True, 2, 64
    if args.compile:
        args.no_memory = True     # the memory subprocesses run eager: their peak would not be the compiled one
    if args.batch < 1 or args.seq < 2:
        ap.error(f"--batch-size must be >= 1 and --seq-len >= 2, got {args.batch} and {args.seq}")
    if args.variants is None:
        args.variants = [v for v in VARIANTS if not (v == "ours-plain" and (args.dtype == "bf16" or args.compile))]
    if args.compile and "ours-plain" in args.variants:
        ap.error("--compile: leave out ours-plain (its swapped MLP forward would recompile every step)")
    return args


def memory_child(args):
    """Fresh process: build one variant, run 2 steps, print its peak memory as JSON."""
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.threads:
        torch.set_num_threads(args.threads)
    v = args.memory_only
    model = build("ours" if v.startswith("ours") else "transformers", args.device, model_config(args)).train()
    ids = torch.randint(0, model_config(args).vocab_size, (args.batch, args.seq), device=args.device)
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
    ours = build("ours", args.device, model_config(args)).train()
    theirs = to_transformers(ours)                                 # train mode, like ours
    fused = fused_adamw_supported(args.device)
    print(f"optimizer: AdamW(lr 3e-4, betas (0.9, 0.95), wd 0.01), {'fused' if fused else 'default (no fused kernel)'} "
          f"for ours and transformers; clip_grad_norm_ 1.0")
    opts = {"ours": make_optimizer(ours, fused), "transformers": make_optimizer(theirs, fused),
            "transformers-default-adamw": make_optimizer(theirs, False)}
    vocab = ours.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(args.device)
    run = {"ours": torch.compile(ours), "theirs": torch.compile(theirs)} if args.compile else \
        {"ours": ours, "theirs": theirs}                          # the optimizers hold the same parameters
    fns = {v: make_step(run["ours"] if v.startswith("ours") else run["theirs"], ids, v,
                        opts["ours" if v.startswith("ours") else v], dtype, args.device) for v in args.variants}
    return side_by_side(fns, args.repeats, args.warmup, args.device), sum(p.numel() for p in ours.parameters())


def add_rows(res: Results, args, rate: dict, peak: dict, pct: dict):
    what = f"train step {args.dtype}{' compiled' if args.compile else ''} {args.batch}x{args.seq}"
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


def write_jsonl(args, rate: dict, flops_per_token: float, peak_tf: float | None, peak_mb: dict):
    """One JSON line per variant: what gpu_check.sh collects into $OUT/figures.jsonl as the run goes."""
    if not args.jsonl:
        return
    from common import machine

    device = machine(args.device)["short"]
    with open(args.jsonl, "a", encoding="utf-8") as f:
        for n, r in rate.items():
            mfu = r * flops_per_token / 1e12 / peak_tf if peak_tf else None
            f.write(json.dumps({"figure": "train_step", "variant": n, "batch": args.batch, "seq": args.seq,
                                "dtype": args.dtype, "compile": args.compile, "tokens_per_s": round(r, 1),
                                "mfu": None if mfu is None else round(mfu, 4), "peak_mb": peak_mb.get(n),
                                "device": device, "torch": torch.__version__}) + "\n")


def flash_check(args) -> dict:
    """One bf16 forward + backward of ours (135M, 2 x 512) with SDPA allowed the flash kernel only: it raises
    if our attention call (no mask, is_causal=True, GQA) is not eligible for it."""
    if not args.device.startswith("cuda"):
        return {"figure": "flash_check", "ok": None, "note": "needs CUDA"}
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = build("ours", args.device, model_config(args)).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 512), device=args.device)
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            model(ids, labels=ids).loss.backward()
        torch.cuda.synchronize()
        return {"figure": "flash_check", "ok": True}
    except RuntimeError as e:
        return {"figure": "flash_check", "ok": False, "error": str(e)[:300]}


def main():
    args = parse_args()
    if args.memory_only:
        return memory_child(args)
    if args.flash_check:
        result = flash_check(args)
        print(json.dumps(result))
        if args.jsonl:
            with open(args.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(result) + "\n")
        return
    dtype = setup(args)
    tokens, cfg = args.batch * args.seq, model_config(args)
    d, inter, vocab = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    ceiling = matmul_ceiling([(tokens, d, inter), (tokens, inter, d), (tokens, d, d), (tokens, d, vocab)],
                             args.device, dtype)
    times, n_params = time_variants(args, dtype)
    flops_per_token = 6 * n_params + 12 * cfg.num_hidden_layers * d * args.seq
    print(f"train step, batch {args.batch} x {args.seq}{', compiled' if args.compile else ''}: tokens/s "
          f"(median of {args.repeats}, alternating)")
    rate = {n: summary(n, t, tokens, "tok/s") for n, t in times.items()}
    pct = {n: 100 * r * flops_per_token / 1e9 / ceiling for n, r in rate.items()}
    peak_tf = peak_tflops(args)
    for n, r in rate.items():
        mfu = f", MFU {100 * r * flops_per_token / 1e12 / peak_tf:.1f}% of {peak_tf:.0f} TFLOP/s" if peak_tf else ""
        print(f"  {n:<28} {r * flops_per_token / 1e9:10.1f} GFLOP/s achieved "
              f"({pct[n]:.0f}% of the {ceiling:.0f} GFLOP/s matmul ceiling measured now{mfu})")
    peak = {} if args.no_memory else peak_memory(args)
    write_jsonl(args, rate, flops_per_token, peak_tf, peak)
    res = Results("train_step.py", args)
    add_rows(res, args, rate, peak, pct)
    res.finish()


if __name__ == "__main__":
    main()
