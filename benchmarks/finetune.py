"""LoRA vs full fine-tuning of SmolLM2-135M-Instruct on notebook 07's "which play?" task: trainable parameters,
peak memory, seconds per step and held-out accuracy before/after (with 95 % confidence intervals).

Each variant runs in a fresh subprocess: load the real weights (offline GGUF, dequantised to fp32), reset the
peak-RSS counter (so the GGUF load does not count), fine-tune `--steps` steps with `ModelTrainer` on the same
chats, batch, schedule and seed, then score the same held-out questions with `choice_accuracy`. The last lines
are `RATIO` lines: LoRA / full for peak memory (below 1 = LoRA smaller) and full / LoRA for seconds per step
(above 1 = LoRA faster).

    python benchmarks/finetune.py                      # 30 steps, batch 4, 64 training chats, 80 held-out
    python benchmarks/finetune.py --steps 20 --n-test 32 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from common import cpu_info

VARIANTS = ("lora", "full")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=30, help="optimiser steps per variant (default 30)")
    ap.add_argument("--batch-size", type=int, default=4, help="chats per step (default 4)")
    ap.add_argument("--n-train", type=int, default=64, help="training chats (default 64)")
    ap.add_argument("--n-test", type=int, default=80, help="held-out questions (default 80)")
    ap.add_argument("--lora-lr", type=float, default=2e-3, help="LoRA peak learning rate (default 2e-3)")
    ap.add_argument("--full-lr", type=float, default=5e-5, help="full fine-tuning peak learning rate (default 5e-5)")
    ap.add_argument("--r", type=int, default=8, help="LoRA rank, all seven projections (default 8)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--variants", default="lora,full", help="comma-separated subset of lora,full")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--score-before", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args()


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def reset_peak_rss() -> bool:
    try:                                   # Linux >= 4.0: "5" resets VmHWM to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(args):
    from smollm2.lora import apply_lora, merge_lora
    from smollm2.sft import ChatDataset, choice_accuracy, play_task
    from smollm2.tokenizer import load_tokenizer
    from smollm2.train import ModelTrainer
    from smollm2.weights import from_pretrained

    if args.threads:
        torch.set_num_threads(args.threads)
    tok = load_tokenizer("smollm2-135m-instruct")
    model = from_pretrained("smollm2-135m-instruct")
    chats, tasks = play_task(n_train=args.n_train, n_test=args.n_test, seed=0)
    out = {"variant": args.child}
    if args.score_before:
        out["before"] = choice_accuracy(model, tok, tasks)
    torch.manual_seed(0)
    if args.child == "lora":
        apply_lora(model, r=args.r, alpha=2 * args.r)
    out["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out["peak_reset"] = reset_peak_rss()
    with tempfile.TemporaryDirectory() as d:
        trainer = ModelTrainer(model, tok, dataset=ChatDataset(chats, tok, max_length=160),
                               batch_size=args.batch_size, max_length=160, target_steps=args.steps,
                               learning_rate=args.lora_lr if args.child == "lora" else args.full_lr,
                               warmup_steps=2, checkpoint_dir=d, checkpoint_interval=10**6, eval_interval=0,
                               sample_interval=0, progress=False, device="cpu", dtype="float32")
        times = []
        for _ in range(args.steps):                # train_step alone: no checkpoint writes in the timings
            t0 = time.perf_counter()
            trainer.train_step()
            times.append(time.perf_counter() - t0)
    out["peak_mb"] = peak_rss_mb()
    out["s_per_step"] = statistics.median(times[1:] if len(times) > 1 else times)
    if args.child == "lora":
        merge_lora(model)
    out["after"] = choice_accuracy(model, tok, tasks)
    for k in ("before", "after"):
        if k in out:
            out[k].pop("predictions")
    print(json.dumps(out))


def ci(r: dict) -> str:
    return f"{r['acc']:.3f} ± {1.96 * r['acc_stderr']:.3f}"


def main():
    args = parse_args()
    if args.child:
        return child(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    print("machine:", cpu_info()["label"])
    print(f"task: which play (4 plays), {args.n_train} training chats, {args.n_test} held-out; {args.steps} steps "
          f"of {args.batch_size} chats; LoRA r={args.r} alpha={2 * args.r} lr {args.lora_lr}, full lr {args.full_lr}")
    results = {}
    for i, v in enumerate(args.variants.split(",")):
        cmd = [sys.executable, __file__, "--child", v, "--steps", str(args.steps), "--batch-size",
               str(args.batch_size), "--n-train", str(args.n_train), "--n-test", str(args.n_test), "--r",
               str(args.r), "--lora-lr", str(args.lora_lr), "--full-lr", str(args.full_lr)]
        cmd += (["--threads", str(args.threads)] if args.threads else []) + (["--score-before"] if i == 0 else [])
        r = results[v] = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True)
                                    .stdout.strip().splitlines()[-1])
        if "before" in r:
            print(f"untuned: held-out accuracy {ci(r['before'])} (95 % CI, n = {r['before']['n']})")
        print(f"{v:>5}: {r['trainable']:>11,} trainable | peak RSS {r['peak_mb']:,.0f} MB"
              f"{'' if r['peak_reset'] else ' (incl. loading)'} | {r['s_per_step']:.2f} s/step | "
              f"held-out accuracy after {ci(r['after'])}")
    if {"lora", "full"} <= set(results):
        lo, fu = results["lora"], results["full"]
        print(f"RATIO peak memory lora/full {lo['peak_mb'] / fu['peak_mb']:.2f}")
        print(f"RATIO steps per second lora/full {fu['s_per_step'] / lo['s_per_step']:.2f}")


if __name__ == "__main__":
    main()
