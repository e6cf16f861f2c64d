"""Inference forward (full logits), SmolLM2-135M, ours vs transformers, at sequence lengths 128..2048.

    python benchmarks/forward.py                     # CPU fp32, batch 1
    python benchmarks/forward.py --lengths 128,512 --repeats 3                # shorter
    python benchmarks/forward.py --device cuda --dtype bf16 --batch 8

Same weights, dtype (weights cast, no autocast), threads and inputs on both sides; torch.inference_mode;
logits for every position on both sides; alternating repeats.
"""
import sys
from pathlib import Path

import torch

from common import Results, base_parser, setup, side_by_side, summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smollm2 import LlamaForCausalLM, SmolLM2Config, to_transformers  # noqa: E402


def parse_lengths(ap, text: str) -> list[int]:
    try:
        lengths = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        lengths = []
    if not lengths or any(not 1 <= T <= 8192 for T in lengths):
        ap.error(f"--lengths must be comma-separated integers in 1..8192, got {text!r}")
    return lengths


def main():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--batch", "--batch-size", dest="batch", type=int, default=1, help="sequences (default 1)")
    ap.add_argument("--lengths", "--seq-len", dest="lengths", default="128,512,1024,2048",
                    help="comma-separated sequence lengths (default 128,512,1024,2048)")
    args = ap.parse_args()
    lengths = parse_lengths(ap, args.lengths)
    if args.batch < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch}")
    dtype = setup(args)
    torch.manual_seed(0)
    ours = LlamaForCausalLM(SmolLM2Config()).eval()
    theirs = to_transformers(ours).to(args.device, dtype)          # eval mode, like ours
    ours = ours.to(args.device, dtype)
    res = Results("forward.py", args)
    for T in lengths:
        ids = torch.randint(0, 49152, (args.batch, T), generator=torch.Generator().manual_seed(T)).to(args.device)

        def run(model):
            with torch.inference_mode():
                model(ids)
        times = side_by_side({"ours": lambda: run(ours), "transformers": lambda: run(theirs)},
                             args.repeats, args.warmup, args.device)
        print(f"forward, batch {args.batch} x {T}: tokens/s")
        rate = {n: summary(n, t, args.batch * T, "tok/s") for n, t in times.items()}
        res.add(f"forward {args.dtype}, batch {args.batch} x {T}", rate["ours"], rate["transformers"], "tok/s")
    res.finish()


if __name__ == "__main__":
    main()
