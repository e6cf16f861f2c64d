"""smollm2.sft: chats rendered with the real template, the assistant-only loss mask, ChatDataset through
ModelTrainer (LoRA checkpoints, bit-exact resume), the offline play task, `python -m smollm2 finetune`."""
import json

import pytest
import torch
import torch.nn.functional as F

from smollm2.cli import finetune_command
from smollm2.lora import apply_lora, load_adapter, lora_layers
from smollm2.sft import ChatDataset, IGNORE_INDEX, encode_chat_labels, play_task, read_chat_jsonl
from smollm2.train import ModelTrainer

from helpers import tiny_config, tiny_model

# the real tokenizer's 49,152 ids on a tiny model: fast, and the template is the GGUF's own
TINY = tiny_config(vocab_size=49152)
CHATS = [[{"role": "user", "content": f"What is {a} plus {b}?"},
          {"role": "assistant", "content": f"{a + b}."}] for a, b in [(1, 2), (3, 4), (10, 5), (7, 7), (2, 9)]]
CHATS.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
              {"role": "assistant", "content": "Goodbye!"}])


def tiny(seed=0):
    return tiny_model(seed, vocab_size=49152).train()


def test_the_mask_covers_exactly_the_assistant_tokens(real_tok):
    for chat in CHATS:
        ids, labels = encode_chat_labels(real_tok, chat)
        assert ids == real_tok.apply_chat_template(chat, tokenize=True, return_dict=False)
        answers = [m["content"] for m in chat if m["role"] == "assistant"]
        trained = [i for i, y in zip(ids, labels) if y != IGNORE_INDEX]
        assert real_tok.decode(trained) == "".join(a + "<|im_end|>" for a in answers)
        assert all(y in (IGNORE_INDEX, i) for i, y in zip(ids, labels))
        end = ids.index(real_tok.eos_token_id, len(ids) - 3)                 # the last <|im_end|> is trained,
        assert labels[end] == ids[end] and labels[end + 1:] == [IGNORE_INDEX] * (len(ids) - end - 1)  # "\n" not


def test_bad_data_is_a_clear_error_naming_the_line(tmp_path, real_tok):
    good = json.dumps({"messages": CHATS[0]})
    cases = {"not JSON": ('{"messages": [', r"chat.jsonl:3: not JSON"),
             "not an object": ('[1, 2]', r'chat.jsonl:3: expected an object \{"messages"'),
             "unknown role": (json.dumps({"messages": [{"role": "bot", "content": "x"}]}),
                              r"chat.jsonl:3: message 0 has unknown role 'bot'"),
             "no content": (json.dumps({"messages": [{"role": "user"}]}), r"chat.jsonl:3: message 0 must be"),
             "no assistant": (json.dumps({"messages": [{"role": "user", "content": "x"}]}),
                              r"chat.jsonl:3: no assistant turn")}
    path = tmp_path / "chat.jsonl"
    for line, message in cases.values():
        path.write_text(good + "\n\n" + line + "\n")                       # a blank line 2 is skipped
        with pytest.raises(ValueError, match=message):
            read_chat_jsonl(path)
    long = [{"role": "user", "content": "word " * 40}, {"role": "assistant", "content": "ok"}]
    path.write_text(good + "\n\n" + json.dumps({"messages": long}) + "\n")
    with pytest.raises(ValueError, match=r"chat.jsonl:3: the chat is \d+ tokens, longer than max_length=50"):
        ChatDataset.from_jsonl(path, real_tok, max_length=50)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_chat_jsonl(tmp_path / "missing.jsonl")
    assert len(read_chat_jsonl(path)) == 2


def test_batches_are_padded_without_cross_talk(real_tok):
    ds = ChatDataset(CHATS, real_tok, max_length=128)
    ids, labels = ds.sample(batch_size=4, seed=0, step=3)
    assert torch.equal(ids, ds.sample(batch_size=4, seed=0, step=3)[0])      # drawn from (seed, step) alone
    assert not torch.equal(ids, ds.sample(batch_size=4, seed=0, step=4)[0])
    model = tiny().eval()
    with torch.no_grad():
        batch_logits = model(ids).logits
        for row in range(4):
            n = int((ids[row] != ds.pad_id).nonzero().max()) + 1              # real tokens, then padding
            assert (labels[row, n:] == IGNORE_INDEX).all()
            alone = model(ids[row:row + 1, :n]).logits
            torch.testing.assert_close(batch_logits[row:row + 1, :n], alone, atol=1e-5, rtol=0)


def trainer(real_tok, ckpt, steps, model=None, **kw):
    ds = ChatDataset(CHATS[:5], real_tok, max_length=64, val_chats=CHATS[5:])
    model = model if model is not None else apply_lora(tiny(), r=4, alpha=8)
    args = dict(batch_size=2, max_length=64, learning_rate=1e-2, checkpoint_dir=ckpt, checkpoint_interval=2,
                target_steps=steps, eval_interval=2, eval_batches=1, sample_interval=0, progress=False,
                device="cpu", dtype="float32", warmup_steps=1)
    return ModelTrainer(model, real_tok, dataset=ds, **{**args, **kw})


def test_the_trainer_loss_counts_only_the_labels(real_tok, tmp_path):
    t = trainer(real_tok, tmp_path / "ck", 1)
    ids, labels = t.batches(0)[0]
    expected = F.cross_entropy(t.model(ids).logits[:, :-1].reshape(-1, TINY.vocab_size), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(t.loss(t.model, (ids, labels)), expected, atol=1e-5, rtol=0)


def test_a_lora_run_checkpoints_only_the_adapters_and_resumes_bit_for_bit(real_tok, tmp_path):
    torch.manual_seed(0)
    straight = trainer(real_tok, tmp_path / "a", 4)
    straight.train()
    torch.manual_seed(0)
    first = trainer(real_tok, tmp_path / "b", 4)
    first.train(2)
    ckpt = torch.load(tmp_path / "b" / "checkpoint_step_2.pt", weights_only=True)
    lora_keys = {f"{n}.lora_{ab}.weight" for n in lora_layers(first.model) for ab in "AB"}
    assert set(ckpt["model"]) == lora_keys and len(ckpt["optimizer"]["state"]) == len(lora_keys)
    torch.manual_seed(0)
    resumed = trainer(real_tok, tmp_path / "b", 4, model=apply_lora(tiny(), r=4, alpha=8))
    assert resumed.step == 2
    resumed.train()
    for (n, p), (_, q) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(p, q), n
    assert [r["loss"] for r in straight.history] == [r["loss"] for r in resumed.history]
    assert "val_loss" in straight.history[-1]
    with pytest.raises(ValueError, match="not this model's trainable ones"):
        trainer(real_tok, tmp_path / "b", 4, model=apply_lora(tiny(), r=4, alpha=8, targets=("q_proj",)))


def test_the_play_task_is_deterministic_and_shares_no_passage():
    chats, tasks = play_task(n_train=16, n_test=8, seed=0)
    again = play_task(n_train=16, n_test=8, seed=0)
    assert (chats, tasks) == again
    assert len(chats) == 16 and len(tasks) == 8
    assert sorted(t["label"] for t in tasks) == [0, 0, 1, 1, 2, 2, 3, 3]           # balanced over the 4 plays
    train_passages = {c[1]["content"] for c in chats}
    assert not train_passages & {t["messages"][1]["content"] for t in tasks}
    assert {c[2]["content"] for c in chats} == set(tasks[0]["choices"])


def test_finetune_command_writes_an_adapter(real_tok, tmp_path, capsys):
    base = tmp_path / "base"
    tiny().save_pretrained(base, tokenizer=real_tok)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CHATS))
    args = ["--data", str(data), "--weights", str(base), "--lora-r", "4", "--steps", "2", "--batch-size", "2",
            "--max-length", "64", "--checkpoint-dir", str(tmp_path / "ck"), "--output", str(tmp_path / "ad"),
            "--sample-interval", "0", "--no-progress", "--device", "cpu"]
    assert finetune_command(args) == 0
    model = load_adapter(tiny(), tmp_path / "ad")
    assert len(lora_layers(model)) == 7 * TINY.num_hidden_layers
    assert any(torch.count_nonzero(m.lora_B.weight) for m in lora_layers(model).values())   # it trained
    data.write_text('{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(SystemExit) as e:                              # bad data: refused before the model loads
        finetune_command(args)
    assert e.value.code == 2 and "chat.jsonl:1: no assistant turn" in capsys.readouterr().err


@pytest.mark.parametrize("kw, match", [(dict(max_chars=59), r"max_chars must be an integer >= 60 .*got 59"),
                                       (dict(max_chars=True), r"max_chars must be an integer >= 60 .*got True"),
                                       (dict(n_test=4000), r"speeches of 60-160 characters, 1000 needed"),
                                       (dict(max_chars=61, n_train=64), r"speeches of 60-61 characters, 16 needed")])
def test_the_play_task_refuses_what_it_cannot_give(kw, match):
    with pytest.raises(ValueError, match=match):
        play_task(**kw)
