"""DistributedDataParallel on CPU (gloo): 2 processes started like torchrun, against one process."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config
from smollm2.data import ByteTokenizer, build_shakespeare_text
from smollm2.train import ModelTrainer

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64)
SETTINGS = dict(batch_size=2, max_length=32, checkpoint_interval=2, target_steps=3, sample_interval=0,
                eval_interval=0, eval_batches=1, progress=False, device="cpu", dtype="float32", grad_accum=2)

WORKER = textwrap.dedent(f"""
    import json, os, sys, torch
    from smollm2 import LlamaForCausalLM, SmolLM2Config, ModelTrainer
    from smollm2.data import ByteTokenizer
    text, ckpt, out = sys.argv[1:4]
    torch.manual_seed(0)
    trainer = ModelTrainer(LlamaForCausalLM(SmolLM2Config(**{TINY!r})), ByteTokenizer(), text,
                           checkpoint_dir=ckpt, **{SETTINGS!r})
    assert trainer.world_size == 2 and trainer.rank == int(os.environ["RANK"])
    trainer.model.zero_grad()
    loss = trainer.forward_backward(trainer.batches(0))          # DDP all-reduces (averages) the gradients
    grads = {{n: p.grad.clone() for n, p in trainer.model.named_parameters()}}
    trainer.train()
    torch.save({{"grads": grads, "loss": loss.item(), "weights": trainer.model.state_dict()}},
               f"{{out}}.rank{{trainer.rank}}.pt")
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_gradients_equal_single_process_on_combined_batch(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text(build_shakespeare_text()[:20_000], encoding="utf-8")
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER, str(text), str(tmp_path / "ck"),
                                       str(tmp_path / "out")], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=150)
        assert p.returncode == 0, err
    r0, r1 = (torch.load(tmp_path / f"out.rank{r}.pt", weights_only=True) for r in range(2))

    # one process, the same model, on the two ranks' windows together (2 micro-batches of 2 + 2 windows)
    single = ModelTrainer(LlamaForCausalLM(SmolLM2Config(**TINY)), ByteTokenizer(), text,
                          checkpoint_dir=tmp_path / "single", **SETTINGS)
    torch.manual_seed(0)
    single.model.load_state_dict(LlamaForCausalLM(SmolLM2Config(**TINY)).state_dict())
    combined = [torch.cat([a, b]) for a, b in zip(single.batches(0, rank=0), single.batches(0, rank=1))]
    loss = single.forward_backward(combined)
    assert loss.item() == pytest.approx((r0["loss"] + r1["loss"]) / 2, rel=1e-5)
    for name, p in single.model.named_parameters():
        torch.testing.assert_close(r0["grads"][name], p.grad, rtol=1e-5, atol=1e-7, msg=name)
        assert torch.equal(r0["grads"][name], r1["grads"][name])          # every rank holds the average
    assert r0["loss"] != r1["loss"]                                        # each rank read its own windows
    # after training, the replicas are identical; only rank 0 wrote checkpoints and the log
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint_step_2.pt", "checkpoint_step_3.pt", "loss.png", "loss_history.jsonl"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "ck" / "loss_history.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    state = torch.load(tmp_path / "ck" / "checkpoint_step_3.pt", weights_only=True)
    assert state["train_config"]["world_size"] == 2
    assert all(torch.equal(state["model"][k], r0["weights"][k]) for k in r0["weights"])
