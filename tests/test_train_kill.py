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
from smollm2.checkpoints import list_checkpoints

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

STEPS, KILLS = 150, 5

TRAIN = """
import sys, torch
from smollm2 import LlamaForCausalLM, SmolLM2Config, ModelTrainer
from smollm2.data import ByteTokenizer


def train(text, ckpt, steps, max_ckpt):
    torch.manual_seed(0)
    model = LlamaForCausalLM(SmolLM2Config(vocab_size=256, hidden_size=64, intermediate_size=128,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=64))
    trainer = ModelTrainer(model, ByteTokenizer(), text, batch_size=2, max_length=32, checkpoint_dir=ckpt,
                           checkpoint_interval=1, max_checkpoints=int(max_ckpt), target_steps=int(steps),
                           sample_interval=0, eval_interval=10, eval_batches=1, progress=False, device="cpu",
                           dtype="float32")
    print("ready", trainer.step, flush=True)
    trainer.train()
    print("done", trainer.step, flush=True)
"""

CHILD = TRAIN + """
train(*sys.argv[1:5])
"""

# A fork server: one process imports torch and smollm2 (~1.3 s) once; each training run is an os.fork() of it,
# a separate process that SIGKILL ends like any other. Commands on stdin: "run <args>" -> "started <pid>",
# "wait <pid>" -> "exited <pid> <exit code, minus the signal number if killed>".
ZYGOTE = TRAIN + """
import os, traceback

for line in sys.stdin:
    command, *args = line.rstrip("\\n").split("\\t")
    if command == "wait":
        pid = int(args[0])
        print("exited", pid, os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
        continue
    pid = os.fork()
    if pid == 0:                                          # the child: one training run, then out
        code = 0
        try:
            train(*args)
        except BaseException:
            traceback.print_exc()
            print("failed", flush=True)
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    print("started", pid, flush=True)
"""


def child_env():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def start(text, ckpt, max_checkpoints):
    return subprocess.Popen([sys.executable, "-c", CHILD, str(text), str(ckpt), str(STEPS), str(max_checkpoints)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


class Zygote:
    """Training runs forked from one process that has already imported torch: the runs SIGKILLed one after
    another cost their training, not a Python + torch start-up each."""

    def __init__(self, err_path):
        self.err_path = err_path
        with open(err_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, env=child_env())

    def _send(self, *fields):
        self.proc.stdin.write("\t".join(map(str, fields)) + "\n")
        self.proc.stdin.flush()

    def _words(self):
        line = self.proc.stdout.readline()
        assert line and line != "failed\n", self.err_path.read_text()
        return line.split()

    def run(self, text, ckpt, max_checkpoints) -> int:
        """Start a run; return its pid once it says "ready" (training starts now)."""
        self._send("run", text, ckpt, STEPS, max_checkpoints)
        pid = ready = None
        while pid is None or ready is None:               # the fork server's line and the run's, in either order
            words = self._words()
            if words[0] == "started":
                pid = int(words[1])
            else:
                assert words[0] == "ready", words
                ready = int(words[1])
        return pid

    def wait(self, pid) -> tuple[int, list[str]]:
        """Reap the run: its exit code (-9 when SIGKILLed) and the lines it printed after "ready"."""
        self._send("wait", pid)
        lines = []
        while (words := self._words())[0] != "exited":
            lines.append(" ".join(words))
        assert int(words[1]) == pid, words
        return int(words[2]), lines

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=60) == 0, self.err_path.read_text()


def check_dir(ckpt, max_checkpoints):
    found = list_checkpoints(ckpt)
    # the oldest is deleted only after the newest is renamed into place: a kill in between leaves one extra
    assert 1 <= len(found) <= max_checkpoints + 1, [p.name for _, p in found]
    step, path = found[-1]
    state = torch.load(path, weights_only=True)           # the newest one always loads
    assert state["step"] == step
    return step


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    text = tmp_path_factory.mktemp("sigkill") / "input.txt"
    text.write_text(build_shakespeare_text()[:20_000], encoding="utf-8")
    return text


@pytest.fixture(scope="module")
def reference(shakespeare):
    """The uninterrupted run, started alongside the first killed one and shared by both parameters:
    `max_checkpoints` only decides which older files are pruned, not the step-150 checkpoint."""
    folder = shakespeare.parent / "reference"
    proc, done = start(shakespeare, folder, 1), []

    def final_checkpoint():
        if not done:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            done.append(folder / f"checkpoint_step_{STEPS}.pt")
        return done[0]

    yield final_checkpoint
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def zygote(shakespeare):
    """One fork server for both parameters (torch imported once)."""
    server = Zygote(shakespeare.parent / "zygote.err")
    yield server
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("max_checkpoints", [3, 1])
def test_sigkill_at_random_moments(tmp_path, shakespeare, reference, zygote, max_checkpoints):
    text, err = shakespeare, zygote.err_path
    rng = random.Random(1234)
    ckpt = tmp_path / "killed"
    steps_seen, kills = [], 0
    t0 = time.time()
    while kills < KILLS:
        pid = zygote.run(text, ckpt, max_checkpoints)    # "ready": training starts now
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(pid, signal.SIGKILL)                      # a run that already ended is a zombie until reaped: no-op
        code, _ = zygote.wait(pid)
        if code == 0:                                     # finished before the kill
            break
        assert code == -signal.SIGKILL, (code, err.read_text())
        kills += 1
        steps_seen.append(check_dir(ckpt, max_checkpoints))
    code, out = zygote.wait(zygote.run(text, ckpt, max_checkpoints))      # resume to the end
    assert code == 0, err.read_text()
    assert "done 150" in out
    assert kills >= 4 and steps_seen == sorted(steps_seen) and steps_seen[-1] < STEPS, (kills, steps_seen)
    assert check_dir(ckpt, max_checkpoints) == STEPS and not list(ckpt.glob(".*"))
    a = torch.load(ckpt / f"checkpoint_step_{STEPS}.pt", weights_only=True)
    b = torch.load(reference(), weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert all(torch.equal(x["exp_avg"], y["exp_avg"])
               for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()))
    print(f"{kills} kills at steps {steps_seen}, {time.time() - t0:.1f} s")
