"""Quality and speed of the quantised copies of notebook 08 against fp32, real SmolLM2-135M-Instruct weights.

    python benchmarks/quantize_quality.py                    # KL / top-1 on a fixed text, HellaSwag on 200 tasks
    python benchmarks/quantize_quality.py --tasks 40 --speed # fewer tasks; also batch-1 decode tokens/s
    python benchmarks/quantize_quality.py --threads 2 --speed --tasks 0

"fp32" is the offline GGUF (Q4_1 decoder, Q8_0 embedding) dequantised to float32, so "Q4_1 vs fp32" is zero
by construction. Quality: `smollm2.evaluate.compare_logits` (mean KL(fp32 || copy), top-1 agreement) over a
fixed ~700-token text (a Shakespeare passage, a prose paragraph, code); int8 copies are fed one token at a time
through the KV cache (as in decoding, where every call is one token), int4 copies in one forward. HellaSwag:
`smollm2.evaluate.hellaswag` on the first --tasks validation tasks (one forward per task: there the int8 copies
differ, per-token activation scales by default, "one scale per call" with per_token=False), acc_norm and the
number of tasks where the copy picks fp32's ending. Speed (--speed): greedy `generate`, batch 1, --new-tokens new tokens after a 2-token
warm-up, best of --repeats, copies interleaved.
"""
import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

warnings.filterwarnings("ignore")
SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "input.txt"   # the repo's data/, any cwd


def stepwise(m):
    def call(ids):
        cache = m.new_cache(1, ids.shape[1])
        return SimpleNamespace(logits=torch.cat([m(ids[:, t:t + 1], cache=cache).logits for t in range(ids.shape[1])], 1))
    return call


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200, help="HellaSwag tasks (0: skip; default 200)")
    ap.add_argument("--speed", action="store_true", help="also time batch-1 greedy decoding")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import smollm2
    from smollm2.data import ensure_shakespeare
    from smollm2.evaluate import compare_logits, hellaswag
    from smollm2.generation import generate
    from smollm2.quantize import quantize_int4, quantize_int8

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    print(f"{cpu} | {torch.get_num_threads()} threads | torch {torch.__version__}", flush=True)
    model = smollm2.from_pretrained("smollm2-135m-instruct").eval()
    tok = smollm2.load_tokenizer("smollm2-135m-instruct")
    play = ensure_shakespeare(SHAKESPEARE).read_text()
    calibration = tok.encode(play[:6000])[:512]
    copies = {"int8 (all but down_proj)": quantize_int8(model),
              "int8, one scale per call": quantize_int8(model, per_token=False),
              "int8 SmoothQuant": quantize_int8(model, calibration_ids=calibration),
              "int4 g32, int8 head": quantize_int4(model, 32), "int4 g64, int8 head": quantize_int4(model, 64),
              "int4 g32, int4 head": quantize_int4(model, 32, head="int4"),
              "int4 g32, fp32 head": quantize_int4(model, 32, head="fp32")}
    text = (play[10000:12000] + "\n\nThe Amazon rainforest covers much of the Amazon basin of South America. The majority"
            " of the forest is contained within Brazil, with 60% of the rainforest, followed by Peru with 13%, and "
            "Colombia with 10%.\n\nimport numpy as np\n\ndef softmax(x):\n    e = np.exp(x - x.max())\n    return e / e.sum()\n")
    results = {"cpu": cpu, "threads": torch.get_num_threads(), "rows": {}}
    with torch.inference_mode():
        base = hellaswag(model, tok, limit=args.tasks) if args.tasks else None
        if base:
            print(f"{'fp32':<24} HellaSwag acc_norm {base['acc_norm']:.3f} ± {base['acc_norm_stderr']:.3f} ({args.tasks} tasks)")
        for name, m in copies.items():
            cand = stepwise(m) if name.startswith("int8") else m
            r = compare_logits(model, cand, tok, text)
            row = results["rows"][name] = {"kl_mean": r["kl_mean"], "top1": r["top1_agreement"], "positions": r["positions"]}
            line = f"{name:<24} KL {r['kl_mean']:.4f} top-1 {r['top1_agreement']:.1%} ({r['positions']} positions)"
            if base:
                h = hellaswag(m, tok, limit=args.tasks)
                same = sum(a["pred_norm"] == b["pred_norm"] for a, b in zip(base["tasks"], h["tasks"]))
                row.update(acc_norm=h["acc_norm"], delta=h["acc_norm"] - base["acc_norm"], same=same)
                line += f" | HellaSwag acc_norm {h['acc_norm']:.3f} (delta {h['acc_norm'] - base['acc_norm']:+.3f}), same choice {same}/{args.tasks}"
            print(line, flush=True)
        if base:
            results["fp32_acc_norm"] = base["acc_norm"]
        if args.speed:
            prompt = tok.encode("The history of the printing press begins")
            models = {"fp32": model, **copies}
            best = dict.fromkeys(models, 0.0)
            for _ in range(args.repeats):
                for name, m in models.items():
                    generate(m, prompt, max_new_tokens=2, temperature=0, eos_token_id=[])
                    t0 = time.perf_counter()
                    generate(m, prompt, max_new_tokens=args.new_tokens, temperature=0, eos_token_id=[])
                    best[name] = max(best[name], args.new_tokens / (time.perf_counter() - t0))
            for name, v in best.items():
                print(f"{name:<24} {v:6.1f} tokens/s  x{v / best['fp32']:.2f} vs fp32", flush=True)
                results["rows"].setdefault(name, {})["tokens_per_s"] = v
    if args.json:
        from smollm2.io import atomic_write

        atomic_write(args.json, json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
