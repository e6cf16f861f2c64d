"""Inference forward (full logits), SmolLM2-135M, ours vs transformers, at sequence lengths 128..2048.

    python benchmarks/forward.py                     # CPU fp32, batch 1
    python benchmarks/forward.py --device cuda --dtype bf16 --batch 8
"""
import sys
from pathlib import Path

import torch

from common import base_parser, hf_twin, setup, side_by_side, summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smollm2 import LlamaForCausalLM, SmolLM2Config  # noqa: E402


def main():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--lengths", default="128,512,1024,2048", help="comma-separated sequence lengths")
    args = ap.parse_args()
    dtype = setup(args)
    torch.manual_seed(0)
    ours = LlamaForCausalLM(SmolLM2Config()).eval()
    theirs = hf_twin(ours, args.device).eval().to(dtype)
    ours = ours.to(args.device, dtype)
    ratios = {}
    for T in (int(x) for x in args.lengths.split(",")):
        ids = torch.randint(0, 49152, (args.batch, T), generator=torch.Generator().manual_seed(T)).to(args.device)

        def run(model):
            with torch.inference_mode():
                model(ids)
        times = side_by_side({"ours": lambda: run(ours), "transformers": lambda: run(theirs)},
                             args.repeats, args.warmup, args.device)
        print(f"forward, batch {args.batch} x {T}: tokens/s")
        rate = {n: summary(n, t, args.batch * T, "tok/s") for n, t in times.items()}
        ratios[T] = rate["ours"] / rate["transformers"]
    print("RATIO ours/transformers: " + ", ".join(f"{T}: {r:.3f}x" for T, r in ratios.items()))


if __name__ == "__main__":
    main()
