"""The server's memory and fairness with the real SmolLM2-135M-Instruct: long prompts beside a short request.

    python benchmarks/serve_memory.py                     # two ~context-length prompts and one short request
    python benchmarks/serve_memory.py --prompt-tokens 4000 --threads 2

The server runs in this process (`smollm2.serve.BackgroundServer`, 127.0.0.1, a free port, its default
`ServeConfig`: token budget 16,384 positions, 128-token prefill chunks). It measures, in one run:
1. a short greedy request alone (its latency, the baseline);
2. the same short request while two long prompts (--prompt-tokens each, 1 new token) are prefilled: its latency
   then, and the ratio to (1) (chunked prefill: the short request should not wait for a whole long prefill);
3. the process's peak resident memory (VmHWM) before and after, and its resident memory once the long
   requests are done (memory returns after a long request).
"""
import sys
import threading
import time
from pathlib import Path

from common import base_parser, cpu_info

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import smollm2  # noqa: E402
from smollm2.serve import BackgroundServer, create_app  # noqa: E402


def memory_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak():
    try:
        Path("/proc/self/clear_refs").write_text("5")           # resets VmHWM to the current RSS (Linux)
    except OSError:
        pass


def short_request(client) -> float:
    t0 = time.perf_counter()
    client.completions.create(model="smollm2-135m-instruct", prompt="The capital of France is", max_tokens=8,
                              temperature=0)
    return time.perf_counter() - t0


def long_prompt(tok, n: int) -> str:
    words, text = "the history of the roman empire is long and complicated ".split(), ""
    while len(tok.encode(text)) < n:
        text += " ".join(words) + " "
    return text


def main():
    ap = base_parser(__doc__.split("\n\n")[0])
    ap.add_argument("--prompt-tokens", type=int, default=8000, help="tokens of each long prompt (context 8,192)")
    args = ap.parse_args()
    import torch
    from openai import OpenAI

    if args.threads:
        torch.set_num_threads(args.threads)
    print(cpu_info()["label"], flush=True)
    model = smollm2.from_pretrained("smollm2-135m-instruct").eval()
    tok = smollm2.load_tokenizer("smollm2-135m-instruct")
    text = long_prompt(tok, args.prompt_tokens)
    with BackgroundServer(create_app(model, tok)) as server:
        client = OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
        short_request(client)                                         # warm-up
        alone = min(short_request(client) for _ in range(3))
        reset_peak()
        before = memory_mb("VmRSS")
        errors = []

        def long_one():
            try:
                client.completions.create(model="smollm2-135m-instruct", prompt=text, max_tokens=1, temperature=0)
            except Exception as e:                                   # a refusal (429/503) is a result too
                errors.append(f"{type(e).__name__}: {e}")

        t0 = time.perf_counter()
        threads = [threading.Thread(target=long_one) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)                                               # both long prompts admitted and prefilling
        beside = short_request(client)
        for t in threads:
            t.join()
        longs = time.perf_counter() - t0
        peak, after = memory_mb("VmHWM"), memory_mb("VmRSS")
    print(f"short request alone {alone:.2f} s; beside two {args.prompt_tokens}-token prompts {beside:.2f} s "
          f"({beside / alone:.2f}x); the long requests took {longs:.1f} s; refused: {errors or 'none'}")
    print(f"resident memory {before:.0f} MB before, peak {peak:.0f} MB (+{peak - before:.0f} MB), {after:.0f} MB "
          f"after the long requests")


if __name__ == "__main__":
    main()
