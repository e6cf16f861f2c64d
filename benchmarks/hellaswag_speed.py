"""How long the full HellaSwag set takes, from an evenly spread sample: fp32 and the int8 copy, real weights.

    python benchmarks/hellaswag_speed.py --threads 2              # every 25th task: 402 tasks per copy
    python benchmarks/hellaswag_speed.py --every 100 --threads 1

The validation set's kinds of task are not spread evenly (the ActivityNet contexts come first, the longer
WikiHow ones later), so a contiguous block would mislead; every N-th task samples both. Prints tasks/s and the
projected time for all 10,042 tasks (`python -m smollm2 eval --task hellaswag [--int8]` runs the set itself;
on a 2-core AMD EPYC the int8 sample predicted the full run within 5 %: README).
"""
import sys
import time
from pathlib import Path

from common import base_parser, setup

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from smollm2 import from_pretrained, load_tokenizer  # noqa: E402
from smollm2.evaluate import hellaswag  # noqa: E402
from smollm2.quantize import quantize  # noqa: E402

N_TASKS = 10042


def main():
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=25, help="score every N-th task (default 25: 402 tasks)")
    args = ap.parse_args()
    setup(args)
    if args.device != "cpu" or args.dtype != "fp32" or args.every < 1:
        raise SystemExit("this benchmark runs on the CPU in fp32 and int8; --every must be >= 1")
    tok = load_tokenizer("smollm2-135m-instruct")
    indices = list(range(0, N_TASKS, args.every))
    for int8 in (False, True):
        model = from_pretrained("smollm2-135m-instruct").eval()
        model = quantize(model, "int8") if int8 else model
        t0 = time.perf_counter()
        r = hellaswag(model, tok, indices=indices)
        rate = r["n"] / (time.perf_counter() - t0)
        print(f"  {'int8' if int8 else 'fp32':<5} {r['n']} tasks: {rate:5.2f} tasks/s -> all {N_TASKS:,} tasks "
              f"~{N_TASKS / rate / 60:.1f} min   (sample acc {r['acc']:.3f}, acc_norm {r['acc_norm']:.3f})")


if __name__ == "__main__":
    main()
