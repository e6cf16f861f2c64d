"""HellaSwag scoring throughput, real weights: our lm-eval adapter vs lm-eval's HFLM on transformers, same requests.

    python benchmarks/evaluate.py                     # 40 tasks (160 loglikelihood requests), CPU fp32
    python benchmarks/evaluate.py --tasks 10 --first 6000 --hf-batch 4

Both models are loaded from the same offline GGUF file (ours with smollm2.from_pretrained, transformers with
from_pretrained(dir, gguf_file=...)) and get the same lm-eval `Instance` requests, four `(context, " " +
ending)` pairs per task, as lm-eval's HellaSwag would hand them. Repeats alternate between the two in one
process; tasks/s is the median. The last line is the ratio ours/HFLM.
"""
import bz2
import sys
from pathlib import Path

import torch

from common import base_parser, setup, side_by_side, summary

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smollm2.evaluate import HELLASWAG_PATH, lm_eval_model  # noqa: E402


def requests(n_tasks: int, first: int = 0):
    from lm_eval.api.instance import Instance

    with bz2.open(HELLASWAG_PATH, "rt", encoding="utf-8") as f:
        lines = [line.rstrip("\n") for _, line in zip(range(6 * (first + n_tasks)), f)][6 * first:]
    return [Instance("loglikelihood", {}, (lines[i], " " + e), first + i // 6, ("hellaswag", first + i // 6, 1))
            for i in range(0, 6 * n_tasks, 6) for e in lines[i + 2:i + 6]]


def main():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=40, help="HellaSwag tasks (4 requests each; default 40)")
    ap.add_argument("--first", type=int, default=0,
                    help="index of the first task (default 0; the WikiHow tasks, with longer contexts, start near 5000)")
    ap.add_argument("--hf-batch", type=int, default=1, help="HFLM batch_size (default 1, lm-eval's default)")
    ap.set_defaults(repeats=3)
    args = ap.parse_args()
    setup(args)
    if args.device != "cpu" or args.dtype != "fp32":
        raise SystemExit("this benchmark runs on the CPU in fp32 (the offline weights are dequantised to fp32)")
    from lm_eval.models.huggingface import HFLM
    from transformers import LlamaForCausalLM
    from transformers.utils import logging

    from smollm2 import from_pretrained, load_tokenizer
    from smollm2.weights import resolve_source

    logging.disable_progress_bar()
    gguf = resolve_source("smollm2-135m-instruct")
    tok = load_tokenizer("smollm2-135m-instruct")
    ours = lm_eval_model()(model=from_pretrained(gguf).eval(), tokenizer=tok)
    hf = LlamaForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    theirs = HFLM(pretrained=hf, tokenizer=tok, batch_size=args.hf_batch)
    reqs = requests(args.tasks, args.first)
    results = {}

    def run(name, lm):
        with torch.inference_mode():
            results[name] = lm.loglikelihood(reqs, disable_tqdm=True)

    times = side_by_side({"ours": lambda: run("ours", ours), "HFLM": lambda: run("HFLM", theirs)},
                         args.repeats, args.warmup, args.device)
    diff = max(abs(a[0] - b[0]) for a, b in zip(results["ours"], results["HFLM"]))
    print(f"max |log-likelihood difference| over {len(reqs)} requests: {diff:.1e} "
          "(HFLM's float32 log_softmax included)")
    print(f"HellaSwag, tasks {args.first}..{args.first + args.tasks - 1} ({len(reqs)} requests), HFLM batch_size "
          f"{args.hf_batch}: tasks/s")
    rate = {n: summary(n, t, args.tasks, "tasks/s") for n, t in times.items()}
    print(f"RATIO ours/HFLM: {rate['ours'] / rate['HFLM']:.2f}x")


if __name__ == "__main__":
    main()
