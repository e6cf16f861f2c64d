"""SIGKILL a training process at random moments, many times: checkpoints stay loadable and resume is exact."""
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from smollm2.data import build_shakespeare_text
from smollm2.train import list_checkpoints

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

STEPS, KILLS = 150, 5

CHILD = textwrap.dedent("""
    import sys, torch
    from smollm2 import LlamaForCausalLM, SmolLM2Config, ModelTrainer
    from smollm2.data import ByteTokenizer
    text, ckpt, steps, max_ckpt = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.manual_seed(0)
    model = LlamaForCausalLM(SmolLM2Config(vocab_size=256, hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=64))
    trainer = ModelTrainer(model, ByteTokenizer(), text, batch_size=2, max_length=32, checkpoint_dir=ckpt,
                           checkpoint_interval=1, max_checkpoints=max_ckpt, target_steps=steps,
                           sample_interval=0, eval_interval=10, eval_batches=1, progress=False, device="cpu",
                           dtype="float32")
    print("ready", trainer.step, flush=True)
    trainer.train()
    print("done", trainer.step, flush=True)
""")


def start(text, ckpt, max_checkpoints):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.Popen([sys.executable, "-c", CHILD, str(text), str(ckpt), str(STEPS), str(max_checkpoints)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def check_dir(ckpt, max_checkpoints):
    found = list_checkpoints(ckpt)
    # the oldest is deleted only after the newest is renamed into place: a kill in between leaves one extra
    assert 1 <= len(found) <= max_checkpoints + 1, [p.name for _, p in found]
    step, path = found[-1]
    state = torch.load(path, weights_only=True)           # the newest one always loads
    assert state["step"] == step
    return step


@pytest.mark.slow
@pytest.mark.parametrize("max_checkpoints", [3, 1])
def test_sigkill_at_random_moments(tmp_path, max_checkpoints):
    text = tmp_path / "input.txt"
    text.write_text(build_shakespeare_text()[:20_000], encoding="utf-8")
    rng = random.Random(1234)
    reference = start(text, tmp_path / "reference", max_checkpoints)      # the uninterrupted run, alongside
    ckpt = tmp_path / "killed"
    steps_seen, kills = [], 0
    t0 = time.time()
    while kills < KILLS:
        proc = start(text, ckpt, max_checkpoints)
        line = proc.stdout.readline()                     # "ready <step>": training starts now
        assert line.startswith("ready"), proc.stderr.read()
        time.sleep(rng.uniform(0.0, 0.2))
        if proc.poll() is not None:                       # finished before the kill
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        steps_seen.append(check_dir(ckpt, max_checkpoints))
    proc = start(text, ckpt, max_checkpoints)                             # resume to the end
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "done 150" in out
    ref_out, ref_err = reference.communicate(timeout=120)
    assert reference.returncode == 0, ref_err
    assert kills >= 4 and steps_seen == sorted(steps_seen) and steps_seen[-1] < STEPS, (kills, steps_seen)
    assert check_dir(ckpt, max_checkpoints) == STEPS and not list(ckpt.glob(".*"))
    a = torch.load(ckpt / f"checkpoint_step_{STEPS}.pt", weights_only=True)
    b = torch.load(tmp_path / "reference" / f"checkpoint_step_{STEPS}.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert all(torch.equal(x["exp_avg"], y["exp_avg"])
               for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()))
    print(f"{kills} kills at steps {steps_seen}, {time.time() - t0:.1f} s")
