"""smollm2.train and the modules it builds on (optim, checkpoints, runtime, train_config): ModelTrainer's schedule,
exact resume, checkpoints and bad input (tiny models, CPU)."""
import dataclasses
import inspect
import json
import math
import os
import pickle
import re
import warnings

import pytest
import torch

import smollm2
from smollm2 import LlamaForCausalLM, SmolLM2Config
from smollm2.data import ByteTokenizer, build_shakespeare_text
from smollm2.cli import train_command as cli
from smollm2.checkpoints import list_checkpoints, save_checkpoint
from smollm2.optim import default_warmup_steps, lr_multiplier, param_groups
from smollm2.train import ModelTrainer
from smollm2.train_config import TrainConfig

import helpers

TINY = helpers.tiny_config(vocab_size=256)                      # bytes: ByteTokenizer's 256 ids


def tiny_model(seed=0, config=TINY):
    return helpers.tiny_model(seed, **dataclasses.asdict(config)).train()


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "input.txt"
    path.write_text(build_shakespeare_text()[:20_000], encoding="utf-8")
    return path


def make(text_file, ckpt, model=None, **kw):
    args = dict(batch_size=2, max_length=32, checkpoint_dir=ckpt, checkpoint_interval=3, target_steps=12,
                sample_interval=0, eval_interval=4, eval_batches=2, progress=False, device="cpu", dtype="float32")
    args.update(kw)
    return ModelTrainer(model or tiny_model(), ByteTokenizer(), text_file, **args)


def snapshot(d):
    """{name: bytes} of a folder (to show that nothing on disk changed)."""
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else None


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_importable_from_package():
    assert smollm2.ModelTrainer is ModelTrainer


def test_schedule():
    assert default_warmup_steps(5000) == 500 and default_warmup_steps(100_000) == 2000
    S, W = 100, 10
    lrs = [lr_multiplier(s, S, W) for s in range(S + 5)]
    assert lrs[:W] == [(s + 1) / W for s in range(W)]
    assert all(m == 1.0 for m in lrs[W:80])                              # stable until the last 20 %
    assert all(a > b for a, b in zip(lrs[80:S], lrs[81:S + 1]))           # linear decay ...
    assert math.isclose(lrs[90], 0.5) and lrs[S] == 0.0 == lrs[S + 4]      # ... to zero
    cos = [lr_multiplier(s, S, W, "cosine", min_lr_ratio=0.1) for s in range(S + 1)]
    assert cos[W] == 1.0 and math.isclose(cos[55], 0.55) and math.isclose(cos[S], 0.1)
    assert lr_multiplier(10_000, S, W, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule must be one of"):
        lr_multiplier(50, S, W, "linear")


def test_param_groups_decay_matrices_once():
    model = tiny_model()
    decay, no_decay = param_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p is model.lm_head.weight for p in decay["params"]) == 1      # the tied embedding, once
    L = TINY.num_hidden_layers
    assert len(decay["params"]) == 1 + 7 * L and len(no_decay["params"]) == 2 * L + 1
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())


def test_optimizer_settings(text_file, tmp_path):
    t = make(text_file, tmp_path / "ck")
    g = t.optimizer.param_groups
    assert g[0]["betas"] == (0.9, 0.95) and g[0]["eps"] == 1e-8 and g[0]["weight_decay"] == 0.01
    assert g[1]["weight_decay"] == 0.0 and g[0]["initial_lr"] == 3e-3
    assert t.device == torch.device("cpu") and t.autocast_dtype is None       # dtype="float32" in make()
    assert t.settings.grad_clip == 1.0 and t.config["warmup_steps"] == default_warmup_steps(12)


def test_auto_dtype_on_cpu_follows_the_hardware():
    from smollm2.runtime import cpu_has_fast_bf16, resolve_autocast_dtype

    expected = torch.bfloat16 if cpu_has_fast_bf16() else None     # bf16 only where AMX makes it fast
    assert resolve_autocast_dtype("auto", torch.device("cpu")) == expected
    assert resolve_autocast_dtype("float32", torch.device("cpu")) is None


def test_training_lowers_loss_and_logs(text_file, tmp_path):
    t = make(text_file, tmp_path / "ck", target_steps=30, checkpoint_interval=10, learning_rate=3e-3)
    history = t.train()
    assert [r["step"] for r in history] == list(range(1, 31))
    assert history[-1]["loss"] < history[0]["loss"] - 1.0                    # ln(256) = 5.5 -> < 4.5
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in history)
    assert [r["step"] for r in history if "val_loss" in r] == [4, 8, 12, 16, 20, 24, 28, 30]
    assert [r["lr"] for r in history[:3]] == pytest.approx([1e-3, 2e-3, 3e-3])  # 3 warmup steps
    logged = [json.loads(line) for line in t.history_file.read_text().splitlines()]
    assert logged == history
    assert [s for s, _ in list_checkpoints(tmp_path / "ck")] == [10, 20, 30]


def test_resume_is_bit_identical(text_file, tmp_path):
    """N steps, stop, a new trainer continues to 2N == 2N at once (CPU, fp32), with gradient accumulation."""
    kw = dict(target_steps=12, grad_accum=2, checkpoint_interval=5, eval_interval=5)
    once = make(text_file, tmp_path / "once", **kw)
    once.train()
    first = make(text_file, tmp_path / "split", **kw)
    first.train(target_steps=6)                  # saves at 5 and at the end (6)
    assert first.step == 6 and [s for s, _ in list_checkpoints(tmp_path / "split")] == [5, 6]
    second = make(text_file, tmp_path / "split", model=tiny_model(seed=123), **kw)   # other init: overwritten
    assert second.step == 6 and second.checkpoint_path.name == "checkpoint_step_6.pt"
    second.train()
    assert second.step == 12 and same_weights(once.model, second.model)
    a, b = once.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg_sq"], b[i]["exp_avg_sq"]) for i in a)
    assert [r["loss"] for r in once.history] == [r["loss"] for r in second.history]
    assert len(second.history_file.read_text().splitlines()) == 12


def test_samples_do_not_change_the_run(text_file, tmp_path):
    plain = make(text_file, tmp_path / "a", target_steps=4)
    plain.train()
    sampled = make(text_file, tmp_path / "b", target_steps=4, sample_interval=2, sample_tokens=5)
    sampled.train()
    assert [s for s, _ in sampled.samples] == [2, 4] and sampled.samples[0][1].startswith("First Citizen:")
    assert same_weights(plain.model, sampled.model)


def test_rotation_keeps_max_checkpoints(text_file, tmp_path):
    t = make(text_file, tmp_path / "ck", checkpoint_interval=1, max_checkpoints=2, target_steps=5)
    t.train()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint_step_4.pt", "checkpoint_step_5.pt", "loss.png", "loss_history.jsonl"]
    state = torch.load(tmp_path / "ck" / "checkpoint_step_5.pt", weights_only=True)
    assert state["step"] == 5 and state["train_config"]["batch_size"] == 2
    assert state["model_config"]["hidden_size"] == TINY.hidden_size and isinstance(state["rng"]["torch"], torch.Tensor)
    assert {"model", "optimizer", "scheduler", "data"} <= state.keys()


def test_train_beyond_schedule_and_at_target(text_file, tmp_path):
    t = make(text_file, tmp_path / "ck", target_steps=4)
    t.train()
    t.train(4)                                                    # nothing to do, no error
    assert t.step == 4
    t2 = make(text_file, tmp_path / "ck", target_steps=4)         # the seed's `train(target_steps=5050)`
    t2.train(target_steps=6)
    assert t2.step == 6 and t2.total_steps == 6 and list_checkpoints(tmp_path / "ck")[-1][0] == 6


@pytest.mark.parametrize("keep", [1000, 20_000], ids=["cut-early", "cut-mid-archive"])
def test_corrupt_newest_checkpoint_falls_back(text_file, tmp_path, keep):
    ck = tmp_path / "ck"
    make(text_file, ck, checkpoint_interval=2, target_steps=6).train()
    newest = ck / "checkpoint_step_6.pt"
    newest.write_bytes(newest.read_bytes()[:keep])                # truncated (20 kB: torch raises OSError(EINVAL))
    with pytest.warns(UserWarning, match="checkpoint_step_6.pt cannot be loaded"):
        t = make(text_file, ck, checkpoint_interval=2, target_steps=6)
    assert t.step == 4 and (ck / "checkpoint_step_6.pt.corrupt").exists() and not newest.exists()
    t.train()
    reference = make(text_file, tmp_path / "ref", checkpoint_interval=2, target_steps=6)
    reference.train()
    assert same_weights(t.model, reference.model)


def test_all_checkpoints_corrupt_stops_unless_restart(text_file, tmp_path):
    ck = tmp_path / "ck"
    make(text_file, ck, checkpoint_interval=2, target_steps=4).train()
    for _, p in list_checkpoints(ck):
        p.write_bytes(b"not a checkpoint")
    before = snapshot(ck)
    with pytest.warns(UserWarning, match="cannot be loaded"), pytest.raises(
            ValueError, match=r"holds 2 checkpoint file\(s\) and none loads(.|\n)*Nothing was changed(.|\n)*"
                              r"restart=True \(--restart\)"):
        make(text_file, ck, checkpoint_interval=1, max_checkpoints=2, target_steps=4)
    assert snapshot(ck) == before                # never silently back to step 0
    with pytest.warns(UserWarning, match=r"restart: moved checkpoint_step_2.pt, checkpoint_step_4.pt, "
                                         r"loss_history.jsonl, loss.png into .*previous-run-"):
        t = make(text_file, ck, checkpoint_interval=1, max_checkpoints=2, target_steps=4, restart=True)
    assert t.step == 0
    kept = [p for p in ck.iterdir() if p.name.startswith("previous-run-")]
    assert len(kept) == 1 and snapshot(kept[0]) == before      # nothing deleted, only moved aside
    t.train(3)
    assert [s for s, _ in list_checkpoints(ck)] == [2, 3]


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4 in the checkpoint:UserWarning")  # torch, on the crafted file
def test_crafted_pickle_is_not_executed(text_file, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    make(text_file, ck, checkpoint_interval=2, target_steps=2).train()
    (ck / "checkpoint_step_9.pt").write_bytes(pickle.dumps({"step": 9, "model": _Exploit()}))
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="checkpoint_step_9.pt cannot be loaded"):
        t = make(text_file, ck, checkpoint_interval=2, target_steps=2)
    assert t.step == 2 and not (tmp_path / "pwned").exists()


def test_config_mismatch_is_a_clear_error(text_file, tmp_path):
    ck = tmp_path / "ck"
    make(text_file, ck, target_steps=3).train()
    before = snapshot(ck)
    with pytest.raises(ValueError, match=r"different configuration(.|\n)*batch_size: checkpoint 2, now 4"):
        make(text_file, ck, batch_size=4)
    with pytest.raises(ValueError, match=r"learning_rate: checkpoint 0.003, now 0.001"):
        make(text_file, ck, learning_rate=1e-3)
    bigger = SmolLM2Config(**{**TINY.__dict__, "hidden_size": 2 * TINY.hidden_size})
    with pytest.raises(ValueError, match=rf"model hidden_size: checkpoint {TINY.hidden_size}, now {2 * TINY.hidden_size}"):
        make(text_file, ck, model=tiny_model(config=bigger))
    assert snapshot(ck) == before


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(batch_size=2.5), "batch_size must be an integer >= 1"),
    (dict(learning_rate=0), "learning_rate must be a positive number, got 0"),
    (dict(learning_rate=-1e-3), "learning_rate must be a positive number"),
    (dict(learning_rate=float("nan")), "learning_rate must be a positive number"),
    (dict(max_length=0), "max_length must be an integer >= 1"),
    (dict(max_length=4096), f"max_length=4096 exceeds the model's max_position_embeddings={TINY.max_position_embeddings}"),
    (dict(target_steps=0), "target_steps must be an integer >= 1"),
    (dict(max_checkpoints=0), "max_checkpoints must be an integer >= 1"),
    (dict(grad_accum=0), "grad_accum must be an integer >= 1"),
    (dict(schedule="linear"), "schedule must be one of"),
    (dict(dtype="float16"), "dtype must be 'auto', 'float32' or 'bfloat16'"),
])
def test_bad_arguments(text_file, tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        make(text_file, tmp_path / "ck", **kw)
    assert not (tmp_path / "ck").exists()


def test_bad_input_files(tmp_path):
    ck = tmp_path / "ck"
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "short.txt").write_text("All:\nSpeak, speak.\n")
    (tmp_path / "latin1.txt").write_bytes(b"Caf\xe9 " * 100)
    cases = [(tmp_path / "missing.txt", FileNotFoundError, "missing.txt.* does not exist"),
             (tmp_path / "empty.txt", ValueError, "empty.txt.* is empty"),
             (tmp_path / "short.txt", ValueError, r"short.txt.* has only 19 tokens; training needs at least "
                                                  r"max_length \+ 1 = 33"),
             (tmp_path / "latin1.txt", ValueError, r"latin1.txt.* is not UTF-8 text: byte 0xe9 at offset 3")]
    before = snapshot(tmp_path)
    for path, error, match in cases:
        with pytest.raises(error, match=match):
            make(path, ck)
    assert snapshot(tmp_path) == before


def test_unwritable_checkpoint_dir(text_file, tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ValueError, match="checkpoint_dir .*a_file/ck.* cannot be created: .*a_file.* is not a "
                                         "directory"):
        make(text_file, tmp_path / "a_file" / "ck")
    with pytest.raises(ValueError, match="cannot be created"):
        make(text_file, tmp_path / "a_file")
    if os.geteuid() != 0:                        # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ValueError, match="cannot be written"):
            make(text_file, locked / "ck")
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_target_below_current_step(text_file, tmp_path):
    ck = tmp_path / "ck"
    make(text_file, ck, target_steps=6).train()
    before = snapshot(ck)
    t = make(text_file, ck, target_steps=6)
    with pytest.raises(ValueError, match=r"target_steps=3 is below the current step 6"):
        t.train(target_steps=3)
    assert snapshot(ck) == before and t.step == 6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(text_file, tmp_path):
    ck = tmp_path / "ck"
    t = make(text_file, ck, checkpoint_interval=2, target_steps=8)
    t.train(target_steps=4)
    before = snapshot(ck)
    with torch.no_grad():
        t.model.model.layers[0].mlp.up_proj.weight[0, 0] = float("inf")     # the loss becomes NaN
    with pytest.raises(FloatingPointError, match=r"loss is nan .* at step 5: training stopped before the update"
                                                 r"(.|\n)*last good checkpoint is .*checkpoint_step_4.pt"):
        t.train()
    assert t.step == 4 and snapshot(ck) == before


class _Unpicklable:
    def __reduce__(self):
        raise pickle.PicklingError("this object refuses to be pickled")


def test_save_checkpoint_is_atomic_and_rotates(tmp_path):
    for step in range(1, 6):
        save_checkpoint({"step": step, "model": {}}, tmp_path, step, max_checkpoints=3)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5]
    assert not list(tmp_path.glob(".*"))                                   # no temporary file left
    with pytest.raises(pickle.PicklingError, match="refuses to be pickled"):   # the write fails: nothing changes
        save_checkpoint({"step": 6, "model": _Unpicklable()}, tmp_path, 6)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 4, 5] and not list(tmp_path.glob(".*"))


def test_cli_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit) as e:
        cli(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--init", "--weights", "--config", "--device", "--dtype", "--compile", "--grad-accum",
                 "--schedule", "--batch-size", "--max-length", "--lr", "--checkpoint-dir", "--checkpoint-interval",
                 "--max-checkpoints", "--steps", "--sample-interval", "--eval-interval", "--warmup-steps",
                 "--restart", "--allow-data-change"):
        assert flag in out, flag
    flat = " ".join(out.split())
    assert "(default: 5000)" in flat and "(default: 0.003)" in flat and "(default: checkpoints)" in flat


def tiny_train_args(text_file, tmp_path) -> list[str]:
    """`python -m smollm2 train` arguments for a tiny byte-level model on `text_file`, checkpoints in tmp_path/ck."""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    return ["--config", str(config), "--tokenizer", "bytes", "--input", str(text_file), "--batch-size", "2",
            "--max-length", "32", "--checkpoint-dir", str(tmp_path / "ck"), "--sample-interval", "0",
            "--no-progress", "--device", "cpu"]


def test_cli_trains_and_resumes(text_file, tmp_path, capsys):
    args = tiny_train_args(text_file, tmp_path) + ["--checkpoint-interval", "2"]
    assert cli(args + ["--steps", "3"]) == 0
    assert cli(args + ["--steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "resuming from" in out and "checkpoint_step_3.pt" in out and "done: step 4" in out
    assert [s for s, _ in list_checkpoints(tmp_path / "ck")] == [2, 3, 4]
    with pytest.raises(SystemExit) as e:                                       # bad input: refused, status 2
        cli(args + ["--steps", "4", "--batch-size", "0"])
    assert e.value.code == 2 and "error: --batch-size must be an integer >= 1, got 0" in capsys.readouterr().err


def test_bf16_autocast_when_asked(text_file, tmp_path):
    t = make(text_file, tmp_path / "ck", dtype="bfloat16", target_steps=2)
    assert t.autocast_dtype == torch.bfloat16
    history = t.train()
    assert all(math.isfinite(r["loss"]) for r in history)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())      # master weights stay fp32


# ---- issue 15: never lose a run, never trust bad bytes --------------------------------------------------------
class _Crash(BaseException):
    """The process dying at this point (nothing may catch it)."""


def test_no_moment_without_a_checkpoint_even_with_max_checkpoints_1(text_file, tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    t = make(text_file, ck, checkpoint_interval=1, max_checkpoints=1, target_steps=4)
    t.train(2)
    real_replace = os.replace

    def crash_before_rename(src, dst):          # the new checkpoint is written; the process dies before its rename
        if str(dst).endswith("checkpoint_step_3.pt"):
            raise _Crash()
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_before_rename)
    with pytest.raises(_Crash):
        t.train(3)
    monkeypatch.undo()
    assert [s for s, _ in list_checkpoints(ck)] == [2]                   # the previous one is still there
    assert make(text_file, ck, checkpoint_interval=1, max_checkpoints=1, target_steps=4).step == 2


def test_resume_prunes_an_interrupted_rotations_leftovers(text_file, tmp_path, monkeypatch):
    """Killed after a save's rename but before its deletions, twice in a row: without pruning on resume the
    folder would hold max_checkpoints + 2 files (the bound test_train_kill checks is max_checkpoints + 1)."""
    import smollm2.checkpoints as checkpoints_module

    ck = tmp_path / "ck"
    monkeypatch.setattr(checkpoints_module, "prune_checkpoints", lambda *a, **k: None)   # every rotation "killed"
    make(text_file, ck, checkpoint_interval=1, max_checkpoints=1, target_steps=3).train()
    assert [s for s, _ in list_checkpoints(ck)] == [1, 2, 3]
    monkeypatch.undo()
    t = make(text_file, ck, checkpoint_interval=1, max_checkpoints=1, target_steps=3)   # resume
    assert t.step == 3 and [s for s, _ in list_checkpoints(ck)] == [3]


def test_complete_temporary_checkpoint_is_used_not_deleted(text_file, tmp_path):
    ck, ref = tmp_path / "ck", tmp_path / "ref"
    make(text_file, ck, checkpoint_interval=2, target_steps=4).train(2)
    reference = make(text_file, ref, checkpoint_interval=2, target_steps=4)
    reference.train(4)
    # a crash after the fsync of step 4 and before its rename leaves it under its temporary name
    (ck / ".checkpoint_step_4.pt.tmp.12345").write_bytes((ref / "checkpoint_step_4.pt").read_bytes())
    (ck / ".checkpoint_step_5.pt.tmp.12345.abcd").write_bytes(b"cut short by the crash")
    (ck / ".notes.txt.tmp.1").write_text("not ours: never deleted")
    with pytest.warns(UserWarning, match=r"\.checkpoint_step_4\.pt\.tmp\.12345: a complete checkpoint left by an "
                                         r"interrupted save, kept as checkpoint_step_4\.pt"):
        t = make(text_file, ck, checkpoint_interval=2, target_steps=4)
    assert t.step == 4 and same_weights(t.model, reference.model)
    t.train(5)
    assert sorted(p.name for p in ck.iterdir()) == [".notes.txt.tmp.1", "checkpoint_step_2.pt", "checkpoint_step_4.pt",
                                                    "checkpoint_step_5.pt", "loss.png", "loss_history.jsonl"]


def test_interrupted_save_cut_inside_its_archive_is_removed(text_file, tmp_path):
    """A temporary checkpoint cut short inside its archive (torch's zip reader raises OSError(EINVAL),
    found by test_train_kill) is an incomplete save: recovery removes it and training resumes."""
    ck = tmp_path / "ck"
    make(text_file, ck, checkpoint_interval=2, target_steps=4).train()
    full = (ck / "checkpoint_step_4.pt").read_bytes()
    tmp = ck / ".checkpoint_step_6.pt.tmp.4242.0123abcd"
    tmp.write_bytes(full[:20_000])                                # torch raises OSError(EINVAL) on this one
    t = make(text_file, ck, checkpoint_interval=2, target_steps=6)
    assert t.step == 4 and not tmp.exists()
    assert [s for s, _ in list_checkpoints(ck)] == [2, 4]


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), OSError(5, "Input/output error"),
                                   MemoryError("out of memory")], ids=["permission", "io", "memory"])
def test_read_errors_are_not_corruption(text_file, tmp_path, monkeypatch, error):
    ck = tmp_path / "ck"
    make(text_file, ck, checkpoint_interval=2, target_steps=4).train()
    before = snapshot(ck)

    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", failing_load)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                  # no "falling back" either
        with pytest.raises(type(error), match=r"cannot read checkpoint .*checkpoint_step_4\.pt .*it was not judged "
                                              r"corrupt and nothing in its folder was changed"):
            make(text_file, ck, checkpoint_interval=2, target_steps=4)
    monkeypatch.undo()
    assert snapshot(ck) == before and make(text_file, ck, checkpoint_interval=2, target_steps=4).step == 4


TRAIN_FOREVER = """
import sys, torch
from smollm2 import LlamaForCausalLM, SmolLM2Config, ModelTrainer
from smollm2.data import ByteTokenizer
torch.manual_seed(0)
model = LlamaForCausalLM(SmolLM2Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))
t = ModelTrainer(model, ByteTokenizer(), sys.argv[1], batch_size=2, max_length=32, checkpoint_dir=sys.argv[2],
                 checkpoint_interval=1000, target_steps=10**6, sample_interval=0, eval_interval=0, progress=False,
                 device="cpu", dtype="float32")
t.train()
"""


def test_one_run_per_checkpoint_folder(text_file, tmp_path):
    import subprocess
    import sys
    import time
    ck = tmp_path / "ck"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    first = subprocess.Popen([sys.executable, "-c", TRAIN_FOREVER, str(text_file), str(ck)], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock, deadline = ck / ".train.lock", time.time() + 120
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "timeout"
            time.sleep(0.1)
        (ck / ".checkpoint_step_7.pt.tmp.1.ab").write_bytes(b"as if the first run were writing it")
        with pytest.raises(ValueError, match=rf"checkpoint_dir .*ck' is in use by another training run "
                                             rf"\(pid {first.pid}, lock \.train\.lock\)"):
            make(text_file, ck)
        assert (ck / ".checkpoint_step_7.pt.tmp.1.ab").exists()          # the second run touched nothing
    finally:
        first.kill()
        first.wait()
    t = make(text_file, ck, target_steps=2)           # the lock died with its process (its file stays behind)
    t.train()
    assert t.step == 2 and not (ck / ".train.lock").exists()


def test_disk_full_during_save_is_a_clean_stop(text_file, tmp_path, capsys, monkeypatch):
    import errno
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY.to_dict()))
    ck = tmp_path / "ck"
    args = ["--config", str(config), "--tokenizer", "bytes", "--input", str(text_file), "--batch-size", "2",
            "--max-length", "32", "--checkpoint-dir", str(ck), "--checkpoint-interval", "2",
            "--sample-interval", "0", "--no-progress", "--device", "cpu"]
    assert cli(args + ["--steps", "3"]) == 0
    before = snapshot(ck)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    capsys.readouterr()
    assert cli(args + ["--steps", "6"]) == 1
    err = capsys.readouterr().err
    assert "error: [Errno 28] cannot write checkpoint_step_4.pt in" in err and "No space left on device" in err
    assert "the previous checkpoints are intact (checkpoint_step_2.pt, checkpoint_step_3.pt)" in err
    assert "Traceback" not in err
    monkeypatch.undo()
    after = snapshot(ck)
    logs = ("loss_history.jsonl", "loss.png")                 # the log and its plot go on; the checkpoints do not
    assert {k: v for k, v in after.items() if k not in logs} == {
        k: v for k, v in before.items() if k not in logs} and not list(ck.glob(".*"))


@pytest.mark.skipif(not os.path.isdir("/sys/kernel"), reason="needs Linux sysfs (not writable, even for root)")
def test_unwritable_checkpoint_dir_is_found_by_trying_even_for_root(text_file):
    # os.access("/sys", W_OK) is True for root, but no file can be created there
    with pytest.raises(ValueError, match=r"checkpoint_dir '/sys/smollm2-ck' cannot be written: creating a file in "
                                         r"'/sys' fails"):
        make(text_file, "/sys/smollm2-ck")


def test_resume_on_other_text_is_a_clear_error(text_file, tmp_path):
    import hashlib
    ck = tmp_path / "ck"
    make(text_file, ck, target_steps=3).train()
    other = tmp_path / "other.txt"
    other.write_text(text_file.read_text(encoding="utf-8")[:-1000], encoding="utf-8")
    before = snapshot(ck)
    with pytest.raises(ValueError, match=r"checkpoint_step_3\.pt was trained on a different text than input_file "
                                         r".*other\.txt': checkpoint 20,000 tokens, sha256 \w{16}\.\.\.; now 19,000 "
                                         r"tokens(.|\n)*allow_data_change=True \(--allow-data-change\)"):
        make(other, ck, target_steps=3)
    assert snapshot(ck) == before
    with pytest.warns(UserWarning, match="continuing on the new text"):
        t = make(other, ck, target_steps=4, allow_data_change=True)
    t.train()
    state = torch.load(ck / "checkpoint_step_4.pt", weights_only=True)
    assert state["train_config"]["data_sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    assert make(other, ck, target_steps=4).step == 4                  # the new text is now the run's text


def test_directory_as_input_file_says_so(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"input_file .* is a directory \(expected a UTF-8 text file\)"):
        make(tmp_path, tmp_path / "ck")


# ---- TrainConfig: every setting once (validated, saved, compared on resume, the CLI's flags) -------------------
@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), r"^batch_size must be an integer >= 1, got 0$"),
    (dict(seed=True), r"^seed must be an integer >= 0, got True$"),
    (dict(target_steps=2.0), r"^target_steps must be an integer >= 1, got 2.0$"),
    (dict(warmup_steps=-1), r"^warmup_steps must be an integer >= 0, got -1$"),
    (dict(eps=0), r"^eps must be a positive number, got 0$"),
    (dict(learning_rate="3e-3"), r"^learning_rate must be a positive number, got '3e-3'$"),
    (dict(weight_decay=-0.1), r"^weight_decay must be >= 0, got -0.1$"),
    (dict(decay_fraction=1.5), r"^decay_fraction must be in \[0, 1\], got 1.5$"),
    (dict(min_lr_ratio=-0.1), r"^min_lr_ratio must be in \[0, 1\], got -0.1$"),
    (dict(val_fraction=1.0), r"^val_fraction must be in \[0, 1\), got 1.0$"),
    (dict(grad_clip=0), r"^grad_clip must be positive \(or None for no clipping\), got 0$"),
    (dict(betas=(0.9, 1.0)), r"^betas must be two numbers in \[0, 1\), got \(0.9, 1.0\)$"),
    (dict(betas=0.9), r"^betas must be two numbers in \[0, 1\), got 0.9$"),
    (dict(schedule="linear"), r"^schedule must be one of \('wsd', 'cosine', 'constant'\), got 'linear'$"),
    (dict(input_file=None), r"^input_file must be a path \(str or pathlib.Path\), got None$"),
    (dict(checkpoint_dir=3), r"^checkpoint_dir must be a path"),
    (dict(sample_prompt=None), r"^sample_prompt must be a string, got None$"),
    (dict(progress="no"), r"^progress must be True or False, got 'no'$"),
    (dict(restart=1), r"^restart must be True or False, got 1$"),
    (dict(dtype="float16"), r"^dtype must be 'auto', 'float32' or 'bfloat16', got 'float16'$"),
    (dict(device="gpu"), r"^device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got 'gpu'$"),
])
def test_trainconfig_rejects_bad_values_naming_the_setting(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)
    with pytest.raises(ValueError, match=match):                 # a copy is validated too
        dataclasses.replace(TrainConfig(), **kw)


def test_trainconfig_defaults_are_the_seed_and_values_are_normalised():
    c = TrainConfig()
    seed = dict(input_file="data/input.txt", batch_size=4, max_length=512, learning_rate=3e-3,
                checkpoint_dir="checkpoints", checkpoint_interval=50, max_checkpoints=3, target_steps=5000)
    assert {k: getattr(c, k) for k in seed} == seed
    c = TrainConfig(learning_rate=1, betas=[0, 0.5], grad_clip=2, weight_decay=0)
    assert c.betas == (0.0, 0.5) and all(type(v) is float for v in (c.learning_rate, c.grad_clip, c.weight_decay))
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.batch_size = 8
    resume = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume"]}
    assert resume == {"val_fraction", "batch_size", "max_length", "grad_accum", "learning_rate", "schedule",
                      "warmup_steps", "decay_fraction", "min_lr_ratio", "weight_decay", "betas", "eps",
                      "grad_clip", "seed"}
    assert c.resume_settings()["betas"] == [0.0, 0.5] and set(c.resume_settings()) == resume   # plain values


def test_config_or_keywords_or_the_seeds_positions_give_one_trainer(text_file, tmp_path):
    kw = dict(sample_interval=0, eval_interval=4, eval_batches=2, progress=False, device="cpu", dtype="float32")
    by_keyword = make(text_file, tmp_path / "a")
    by_position = ModelTrainer(tiny_model(), ByteTokenizer(), text_file, 2, 32, 3e-3, tmp_path / "b", 3, 3, 12, **kw)
    config = TrainConfig(input_file=text_file, batch_size=2, max_length=32, checkpoint_dir=tmp_path / "c",
                         checkpoint_interval=3, target_steps=12, **kw)
    by_config = ModelTrainer(tiny_model(), ByteTokenizer(), config=config)
    overridden = ModelTrainer(tiny_model(), ByteTokenizer(), config=dataclasses.replace(config, batch_size=5),
                              batch_size=2, checkpoint_dir=tmp_path / "d")
    for t in (by_position, by_config, overridden):
        assert t.config == by_keyword.config                       # what the checkpoints will hold
        assert dataclasses.replace(t.settings, checkpoint_dir="x") == dataclasses.replace(by_keyword.settings,
                                                                                          checkpoint_dir="x")
    assert by_config.settings.warmup_steps == default_warmup_steps(12) == by_config.config["warmup_steps"]
    assert by_position.settings.batch_size == 2 and by_position.settings.target_steps == 12
    assert by_config.settings.batch_size == 2 and by_config.settings.sample_prompt == "First Citizen:"
    assert not hasattr(by_config, "batch_size")                 # a setting is read from trainer.settings


SEED = dict(input_file="data/input.txt", batch_size=4, max_length=512, learning_rate=3e-3,
            checkpoint_dir="checkpoints", checkpoint_interval=50, max_checkpoints=3, target_steps=5000)


def test_trainer_signature_is_the_real_one_with_the_seeds_parameters():
    assert "__signature__" not in ModelTrainer.__init__.__dict__ and "__getattr__" not in vars(ModelTrainer)
    params = list(inspect.signature(ModelTrainer).parameters.values())
    assert [p.name for p in params] == ["model", "tokenizer", *SEED, "config", "dataset", "settings"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:10])
    assert [p.kind for p in params[10:]] == [params[10].KEYWORD_ONLY] * 2 + [params[10].VAR_KEYWORD]
    assert all(p.default is None for p in params[2:12])          # None: the config's value (TrainConfig's default)
    assert {name: getattr(TrainConfig(), name) for name in SEED} == SEED


def test_the_seeds_defaults_as_resolved(text_file, tmp_path):
    model = tiny_model(config=dataclasses.replace(TINY, max_position_embeddings=512))
    t = ModelTrainer(model, ByteTokenizer(), text_file, checkpoint_dir=tmp_path / "ck", progress=False,
                     device="cpu", dtype="float32")
    assert {name: getattr(t.settings, name) for name in SEED} == {**SEED, "input_file": text_file,
                                                                  "checkpoint_dir": tmp_path / "ck"}
    assert t.total_steps == 5000 and t.optimizer.param_groups[0]["initial_lr"] == 3e-3


def test_trainer_arguments_that_are_not_settings(text_file, tmp_path):
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'learning_rat'"):
        make(text_file, tmp_path / "ck", learning_rat=1e-3)
    with pytest.raises(TypeError, match=r"multiple values for argument 'batch_size'"):
        ModelTrainer(tiny_model(), ByteTokenizer(), text_file, 2, batch_size=4)
    with pytest.raises(TypeError, match=r"takes from 3 to 11 positional arguments but 12 were given"):
        ModelTrainer(tiny_model(), ByteTokenizer(), text_file, 2, 32, 3e-3, tmp_path / "ck", 3, 3, 12, 0)
    with pytest.raises(ValueError, match=r"config must be a TrainConfig, got dict"):
        ModelTrainer(tiny_model(), ByteTokenizer(), config={"batch_size": 2})
    assert not (tmp_path / "ck").exists()


# a valid value other than make()'s for every setting that shapes the run
CHANGED = dict(val_fraction=0.2, batch_size=3, max_length=16, grad_accum=2, learning_rate=1e-3, schedule="cosine",
               warmup_steps=5, decay_fraction=0.5, min_lr_ratio=0.1, weight_decay=0.1, betas=(0.8, 0.95), eps=1e-6,
               grad_clip=None, seed=7)


@pytest.fixture(scope="module")
def trained_dir(text_file, tmp_path_factory):
    ck = tmp_path_factory.mktemp("trained") / "ck"
    make(text_file, ck, target_steps=3).train()
    return ck


def test_every_resume_setting_is_checked():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resume"]}


@pytest.mark.parametrize("name", CHANGED)
def test_resume_with_a_changed_setting_is_refused_naming_it(text_file, trained_dir, name):
    before = snapshot(trained_dir)
    saved = torch.load(trained_dir / "checkpoint_step_3.pt", weights_only=True)["train_config"][name]
    now = TrainConfig(**{name: CHANGED[name]}).resume_settings()[name]
    with pytest.raises(ValueError, match=rf"checkpoint_step_3\.pt was saved with a different configuration; resume "
                                         rf"with the same settings(.|\n)*\n  {name}: checkpoint "
                                         rf"{re.escape(repr(saved))}, now {re.escape(repr(now))}$"):
        make(text_file, trained_dir, **{name: CHANGED[name]})
    assert snapshot(trained_dir) == before


def test_resume_with_other_per_run_settings_is_fine(text_file, trained_dir):
    t = make(text_file, trained_dir, checkpoint_interval=5, max_checkpoints=1, eval_interval=0, eval_batches=1,
             sample_interval=7, sample_tokens=3, log_interval=2, target_steps=20)
    assert t.step == 3 and t.total_steps == 20 and t.config["warmup_steps"] == default_warmup_steps(12)


# the documented spelling of every TrainConfig field on the command line, and a value other than the default
FLAGS = {"input_file": (["--input", "other.txt"], "other.txt"), "val_fraction": (["--val-fraction", "0.2"], 0.2),
         "target_steps": (["--target-steps", "7"], 7), "batch_size": (["--batch-size", "3"], 3),
         "max_length": (["--max-length", "16"], 16), "grad_accum": (["--grad-accum", "2"], 2),
         "learning_rate": (["--lr", "1e-4"], 1e-4), "schedule": (["--schedule", "cosine"], "cosine"),
         "warmup_steps": (["--warmup-steps", "3"], 3), "decay_fraction": (["--decay-fraction", "0.5"], 0.5),
         "min_lr_ratio": (["--min-lr-ratio", "0.1"], 0.1), "weight_decay": (["--weight-decay", "0.1"], 0.1),
         "betas": (["--beta1", "0.8", "--beta2", "0.99"], (0.8, 0.99)), "eps": (["--eps", "1e-6"], 1e-6),
         "grad_clip": (["--grad-clip", "0"], None), "seed": (["--seed", "7"], 7),
         "checkpoint_dir": (["--checkpoint-dir", "ck"], "ck"),
         "checkpoint_interval": (["--checkpoint-interval", "5"], 5),
         "max_checkpoints": (["--max-checkpoints", "2"], 2), "restart": (["--restart"], True),
         "allow_data_change": (["--allow-data-change"], True), "eval_interval": (["--eval-interval", "5"], 5),
         "eval_batches": (["--eval-batches", "2"], 2), "sample_interval": (["--sample-interval", "0"], 0),
         "sample_prompt": (["--sample-prompt", "ROMEO:"], "ROMEO:"), "sample_tokens": (["--sample-tokens", "5"], 5),
         "log_interval": (["--log-interval", "1"], 1), "progress": (["--no-progress"], False),
         "device": (["--device", "cpu"], "cpu"), "dtype": (["--dtype", "float32"], "float32"),
         "compile": (["--compile"], True), "fused_loss": (["--fused-loss", "off"], "off"),
         "lean_swiglu": (["--lean-swiglu", "on"], "on")}


def test_cli_flags_are_the_trainconfig_fields(capsys):
    from smollm2.cli_train import _train_parser, train_settings as _train_settings

    ap = _train_parser()
    assert list(FLAGS) == [f.name for f in dataclasses.fields(TrainConfig)]
    model_flags = {"help", "init", "weights", "config", "model_seed", "tokenizer", "threads"}
    assert {a.dest for a in ap._actions} - model_flags == set(FLAGS) - {"betas"} | {"beta1", "beta2"}
    assert _train_settings(ap.parse_args([])) == TrainConfig()                  # the same defaults
    for name, (argv, value) in FLAGS.items():                                   # each flag sets its field only
        assert _train_settings(ap.parse_args(argv)) == dataclasses.replace(TrainConfig(), **{name: value}), argv
    assert _train_settings(ap.parse_args(["--steps", "9", "--learning-rate", "0.01", "--grad-clip", "0.5"])) == \
        TrainConfig(target_steps=9, learning_rate=0.01, grad_clip=0.5)
    with pytest.raises(SystemExit):
        cli(["--help"])
    flat = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):                                   # each field's help is its flag's
        assert " ".join(f.metadata["help"].split()) in flat, f.name


def test_cli_refuses_a_changed_setting_on_resume(text_file, tmp_path, capsys):
    args = tiny_train_args(text_file, tmp_path) + ["--steps", "2"]
    assert cli(args) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:                         # flags that contradict the checkpoint: bad input
        cli(args + ["--beta2", "0.99"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "was saved with a different configuration" in err and "betas: checkpoint [0.9, 0.95], now [0.9, 0.99]" in err


# ---------------------------------------------------------------- device-aware extras, compile, loss.png
def test_extras_are_chosen_per_device():
    from smollm2.train import uses_extra

    assert uses_extra("auto", "cpu") and not uses_extra("auto", "cuda") and not uses_extra("auto", "mps")
    assert not uses_extra("auto", "cpu", compile=True)            # inductor fuses the plain code itself
    assert uses_extra("on", "cuda", compile=True) and not uses_extra("off", "cpu")
    with pytest.raises(ValueError, match=r"one of \('auto', 'on', 'off'\), got 'yes'"):
        uses_extra("yes", "cpu")


@pytest.mark.parametrize("name", ["fused_loss", "lean_swiglu"])
def test_extra_settings_are_validated(name):
    with pytest.raises(ValueError, match=rf"^{name} must be one of \('auto', 'on', 'off'\), got True$"):
        TrainConfig(**{name: True})


def test_extras_off_give_the_same_losses(text_file, tmp_path):
    """Both extras are the same maths: on (the CPU default) and off train to the same losses."""
    on = make(text_file, tmp_path / "on", target_steps=3, eval_interval=0).train()
    t = make(text_file, tmp_path / "off", target_steps=3, eval_interval=0, fused_loss="off", lean_swiglu="off")
    assert not t.fused_loss_on
    assert all(type(m).forward is not m.forward.__func__ for m in t.model.modules()
               if isinstance(m, smollm2.model.LlamaMLP))                       # autograd's SwiGLU swapped in
    off = t.train()
    for a, b in zip(on, off):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (a, b)


def test_attention_can_use_flash_kernels(text_file, tmp_path, monkeypatch):
    """Training calls SDPA without a mask and with is_causal=True: what flash / efficient attention need."""
    calls, sdpa = [], torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        calls.append((kw.get("attn_mask"), kw.get("is_causal")))
        return sdpa(*args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    make(text_file, tmp_path / "c", target_steps=1, eval_interval=0).train()
    assert calls and all(mask is None and causal is True for mask, causal in calls)


@pytest.mark.slow
def test_compiled_steps_match_eager_ones(text_file, tmp_path):
    """compile=True (inductor, CPU): 2 steps train to the eager losses (loss path differs: plain vs fused)."""
    eager = make(text_file, tmp_path / "eager", target_steps=2, eval_interval=0).train()
    t = make(text_file, tmp_path / "compiled", target_steps=2, eval_interval=0, compile=True)
    assert not t.fused_loss_on and t._forward_model is not t.model
    compiled = t.train()
    assert [r["step"] for r in compiled] == [1, 2]
    for a, b in zip(eager, compiled):
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-4), (a, b)


PNG = b"\x89PNG\r\n\x1a\n"


def test_loss_png_is_written_and_updated(text_file, tmp_path):
    pytest.importorskip("matplotlib")
    t = make(text_file, tmp_path / "c", target_steps=4, eval_interval=2)
    t.train()
    first = (tmp_path / "c" / "loss.png").read_bytes()
    assert first.startswith(PNG) and first[12:16] == b"IHDR"
    t.train(target_steps=6)
    second = (tmp_path / "c" / "loss.png").read_bytes()
    assert second.startswith(PNG) and second != first                 # redrawn with the new points
    assert not list((tmp_path / "c").glob(".loss.png.tmp.*"))


def test_a_failed_plot_leaves_the_old_one(text_file, tmp_path, monkeypatch):
    mpl = pytest.importorskip("matplotlib.figure")
    t = make(text_file, tmp_path / "c", target_steps=2, eval_interval=2)
    t.train()
    before = (tmp_path / "c" / "loss.png").read_bytes()

    def broken(self, fname, **kw):
        with open(fname, "wb") as f:
            f.write(PNG[:4])                               # half a file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mpl.Figure, "savefig", broken)
    with pytest.raises(OSError):
        t.train(target_steps=4)
    assert (tmp_path / "c" / "loss.png").read_bytes() == before
    assert not list((tmp_path / "c").glob(".loss.png.tmp.*"))


def test_without_matplotlib_a_note_once(text_file, tmp_path, monkeypatch, capsys):
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)           # import matplotlib -> ImportError
    make(text_file, tmp_path / "c", target_steps=6, eval_interval=2).train()
    out = capsys.readouterr().out
    assert out.count("matplotlib is not installed") == 1 and not (tmp_path / "c" / "loss.png").exists()


def test_an_interrupted_plot_is_cleaned_up(text_file, tmp_path):
    d = tmp_path / "c"
    d.mkdir()
    (d / f".loss.png.tmp.{os.getpid()}.abcd1234").write_bytes(PNG[:3])
    make(text_file, d, target_steps=1, eval_interval=0).train()
    assert not list(d.glob(".loss.png.tmp.*"))


def test_sample_refuses_bad_arguments_with_their_names(text_file, tmp_path):
    t = make(text_file, tmp_path / "bad", target_steps=1)
    context = t.model.config.max_position_embeddings
    for kwargs, name in [({"temperature": 0}, "temperature"), ({"temperature": True}, "temperature"),
                         ({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": context}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=name):
            t.sample(**kwargs)
    with pytest.raises(ValueError, match="prompt must not be empty"):
        t.sample("")
    assert t.sample(max_new_tokens=3, seed=0).startswith("First Citizen:")
