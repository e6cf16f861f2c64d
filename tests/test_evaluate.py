"""smollm2.evaluate: scoring, HellaSwag, perplexity, compare_logits, the lm-eval adapter and `smollm2 eval`."""
import bz2
import json
import math
import subprocess
import sys

import pytest
import torch

from helpers import SMALL, twins
from smollm2 import SmolLM2Config
from smollm2.evaluate import (HELLASWAG_PATH, compare_logits, encode_pair, hellaswag, lm_eval_model,
                              load_hellaswag, pack_tails, perplexity, score_choices, score_tokens)


@pytest.fixture(scope="module")
def real(real_ours, real_tok):
    """Our model and tokenizer from the offline GGUF (loaded once per session, tests/conftest.py)."""
    return real_ours, real_tok


@pytest.fixture(scope="module")
def hf_real(real_hf):
    """transformers' own LlamaForCausalLM, loaded (and dequantised) from the same GGUF file."""
    return real_hf


def first_tasks(n):
    with bz2.open(HELLASWAG_PATH, "rt", encoding="utf-8") as f:
        lines = [next(f).rstrip("\n") for _ in range(6 * n)]
    return [(lines[i], [" " + e for e in lines[i + 2:i + 6]]) for i in range(0, 6 * n, 6)]


@torch.inference_mode()
def plain_scores(model, tok, context, endings):
    """One full forward per context + ending, log_softmax in float64, sum of the ending's entries."""
    out = []
    for e in endings:
        c, cont = encode_pair(tok, context, e)
        logp = model(torch.tensor([c + cont])).logits[0].double().log_softmax(-1)
        out.append(logp[len(c) - 1:-1].gather(1, torch.tensor(cont)[:, None]).sum().item())
    return out


def test_score_choices_equals_separate_forwards_and_transformers(real, hf_real):
    model, tok = real
    for context, endings in first_tasks(4):
        ours = score_choices(model, tok, context, endings)
        assert len(ours) == 4 and all(s < 0 for s in ours)
        for ref in (plain_scores(model, tok, context, endings), plain_scores(hf_real, tok, context, endings)):
            assert max(abs(a - b) for a, b in zip(ours, ref)) < 1e-4


def test_score_tokens_batch_equals_one_at_a_time():
    model, _ = twins(SmolLM2Config(**SMALL))
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 320, (9,), generator=g).tolist()
    tails = [torch.randint(0, 320, (n,), generator=g).tolist() for n in (1, 5, 3, 1, 7)]   # ragged, 1-token ones
    batched, greedy = score_tokens(model, prefix, tails)
    for tail, got, flag in zip(tails, batched, greedy):
        with torch.inference_mode():
            logp = model(torch.tensor([prefix + tail])).logits[0].double().log_softmax(-1)
        rows = logp[len(prefix) - 1:-1]
        assert got == pytest.approx(rows.gather(1, torch.tensor(tail)[:, None]).sum().item(), abs=1e-5)
        assert flag == bool((rows.argmax(-1) == torch.tensor(tail)).all())
    all_one = score_tokens(model, prefix, [[t[0]] for t in tails])[0]                     # no tail tokens fed at all
    assert all_one[0] == pytest.approx(batched[0], abs=1e-6) and all_one[3] == pytest.approx(batched[3], abs=1e-6)
    alone = score_tokens(model, prefix, [tails[4]])[0][0]                                  # one tail: the causal path
    assert alone == pytest.approx(batched[4], abs=1e-5)


def test_pack_tails_mask_keeps_each_tail_to_the_prefix_and_itself():
    ids, pos, mask, rows = pack_tails([7, 8], [[1, 2, 3], [4], [5, 6]])
    assert ids.tolist() == [7, 8, 1, 2, 5] and pos.tolist() == [0, 1, 2, 3, 2]
    assert rows.tolist() == [1, 2, 3, 1, 1, 4]                 # token 0 of every tail <- the prefix's last row
    want = torch.tensor([[1, 0, 0, 0, 0],                         # prefix: causal
                         [1, 1, 0, 0, 0],
                         [1, 1, 1, 0, 0],                         # tail 0: the prefix, then itself
                         [1, 1, 1, 1, 0],
                         [1, 1, 0, 0, 1]], dtype=torch.bool)      # tail 2: the prefix and itself, not tail 0
    assert torch.equal(mask, want)
    assert pack_tails([7, 8], [[1, 2, 3]])[2] is None               # one tail: plain causal, no (T, T) mask built


@pytest.mark.parametrize("prefix, tails", [([], [[1]]), ([1], []), ([1], [[2], []])])
def test_score_tokens_rejects_empty_prefix_or_tails(prefix, tails):
    model, _ = twins(SmolLM2Config(**SMALL))
    with pytest.raises(ValueError, match="non-empty prefix and non-empty tails"):
        score_tokens(model, prefix, tails)


def test_hellaswag_sample_is_seeded_and_nested():
    from smollm2.evaluate import _selection
    five, ten = _selection(10042, None, None, sample=5), _selection(10042, None, None, sample=10)
    assert five == torch.randperm(10042, generator=torch.Generator().manual_seed(0))[:5].tolist()
    assert ten[:5] == five and len(set(ten)) == 10                    # a larger sample starts with a smaller one
    assert _selection(10042, 3, None, sample=10) == ten[:3]           # limit keeps the first of them
    for bad, match in [(0, "sample: expected an integer in"), (10043, "sample: expected an integer in"),
                       (True, "sample: expected an integer in")]:
        with pytest.raises(ValueError, match=match):
            _selection(10042, None, None, sample=bad)
    with pytest.raises(ValueError, match="indices and sample"):
        _selection(10042, None, [1, 2], sample=2)


def test_encode_pair_moves_trailing_space_and_handles_empty_context(real):
    _, tok = real
    assert encode_pair(tok, "The cat ", "sat") == encode_pair(tok, "The cat", " sat")
    ctx, cont = encode_pair(tok, "", "Hello", prefix_token=1)
    assert ctx == [1] and tok.decode(cont) == "Hello"


class RecordingBar:
    """Stands in for tqdm: records the progress bar's postfix after each task."""
    made = []

    def __init__(self, total, **kwargs):
        self.total, self.postfixes, self.updates, self.closed = total, [], 0, False
        RecordingBar.made.append(self)

    def set_postfix(self, refresh=True, **postfix):
        self.postfixes.append(postfix)

    def update(self, n=1):
        self.updates += n

    def close(self):
        self.closed = True


def test_hellaswag_metrics_are_consistent_with_the_per_task_choices(real, monkeypatch):
    import tqdm.auto

    model, tok = real
    monkeypatch.setattr(tqdm.auto, "tqdm", RecordingBar)
    RecordingBar.made.clear()
    r = hellaswag(model, tok, indices=[5, 0, 7], limit=2, progress=True)
    assert r["n"] == 2 and [t["index"] for t in r["tasks"]] == [5, 0]
    # issue 11: the bar's running accuracy (kept as counts, not recomputed over all results) after each task
    (bar,) = RecordingBar.made
    assert bar.total == bar.updates == 2 and bar.closed
    first = r["tasks"][0]
    assert bar.postfixes[0] == {"acc": f"{float(first['pred'] == first['label']):.3f}",
                                "acc_norm": f"{float(first['pred_norm'] == first['label']):.3f}"}
    assert bar.postfixes[-1] == {"acc": f"{r['acc']:.3f}", "acc_norm": f"{r['acc_norm']:.3f}"}
    tasks = load_hellaswag()
    assert len(tasks) == 10042 and tasks[0]["label"] == 3 and len(tasks[0]["endings"]) == 4
    for t in r["tasks"]:
        assert t["chars"] == [len(e) for e in tasks[t["index"]]["endings"]]
        assert t["pred"] == max(range(4), key=lambda i: t["logprobs"][i])
        assert t["pred_norm"] == max(range(4), key=lambda i: t["logprobs"][i] / t["chars"][i])
        assert t["logprobs"] == pytest.approx(score_choices(model, tok, tasks[t["index"]]["context"],
                                                            [" " + e for e in tasks[t["index"]]["endings"]]))
    assert r["acc"] == sum(t["pred"] == t["label"] for t in r["tasks"]) / 2
    assert r["acc_norm"] == sum(t["pred_norm"] == t["label"] for t in r["tasks"]) / 2


@torch.inference_mode()
def hf_sliding_window(hf, ids, max_length, stride):
    """transformers' perplexity guide (labels with the context at -100, shifted by one), the cross-entropy summed
    in float64 from transformers' logits (float32 log_softmax is biased by ~1e-5 nats per token on this CPU)."""
    ids = torch.tensor([ids])
    total, count, prev_end = 0.0, 0, 0
    for begin in range(0, ids.shape[1], stride):
        end = min(begin + max_length, ids.shape[1])
        x = ids[:, begin:end]
        labels = x.clone()
        labels[:, :-(end - prev_end)] = -100
        logits = hf(x).logits[0, :-1].double()
        total += torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum").item()
        count += (labels[:, 1:] != -100).sum().item()
        prev_end = end
        if end == ids.shape[1]:
            break
    return total, count


def test_perplexity_equals_transformers_sliding_window(real, hf_real):
    model, tok = real
    text = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
            "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n") * 3
    ids = tok.encode(text)
    for max_length, stride, unscored in ((64, 24, 1), (50, 50, math.ceil(len(ids) / 50))):
        r = perplexity(model, tok, text, max_length=max_length, stride=stride)
        total, count = hf_sliding_window(hf_real, ids, max_length, stride)
        # every token once, except the first of the text (or, with stride == max_length, of each window)
        assert r["tokens"] == count == len(ids) - unscored
        assert math.log(r["perplexity"]) == pytest.approx(total / count, abs=1e-5)
        n_bytes = len(text.encode()) - len(tok.decode(ids[:1]).encode())
        assert r["bytes"] == n_bytes
        assert r["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5)


def test_compare_logits_against_a_direct_kl():
    a, _ = twins(SmolLM2Config(**SMALL), seed=0)
    b, _ = twins(SmolLM2Config(**SMALL), seed=1)

    class Tok:                                         # token ids 0..319: one per character code
        def encode(self, text):
            return [ord(c) % 320 for c in text]

    text = "the quick brown fox jumps over the lazy dog, " * 4
    same = compare_logits(a, a, Tok(), text, max_length=64)
    assert same["kl_max"] < 1e-6 and same["top1_agreement"] == 1 and same["positions"] == len(text)
    r = compare_logits(a, b, Tok(), text, max_length=64, per_token=True)
    x = torch.tensor([Tok().encode(text)])
    kl = []
    with torch.inference_mode():
        for s in range(0, x.shape[1], 64):                 # chunks of 64 tokens, each without earlier context
            lp, lq = (m(x[:, s:s + 64]).logits[0].double().log_softmax(-1) for m in (a, b))
            kl.append((lp.exp() * (lp - lq)).sum(-1))
    kl = torch.cat(kl)
    assert r["kl"].shape == (len(text),) and r["kl_mean"] == pytest.approx(kl.mean().item(), rel=1e-4)
    assert r["kl_max"] == pytest.approx(kl.max().item(), rel=1e-4)
    assert 0 < r["top1_agreement"] < 1 and r["max_logprob_diff"] > 0


def instances(tasks):
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, (c, e), i) for i, (c, ends) in enumerate(tasks) for e in ends]
    return reqs + [Instance("loglikelihood", {}, ("", "The quick brown fox"), len(reqs)),
                   Instance("loglikelihood", {}, ("Question: 2 + 2 =", " 4"), len(reqs) + 1)]


def test_adapter_equals_lm_eval_hflm(real, hf_real):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model, tok = real
    ours = lm_eval_model()(model=model, tokenizer=tok)
    theirs = HFLM(pretrained=hf_real, tokenizer=tok, batch_size=4, softmax_dtype=torch.float64)
    reqs = instances(first_tasks(3))
    a, b = ours.loglikelihood(reqs, disable_tqdm=True), theirs.loglikelihood(reqs, disable_tqdm=True)
    assert len(a) == len(b) == 14
    assert max(abs(x[0] - y[0]) for x, y in zip(a, b)) < 1e-4
    assert [x[1] for x in a] == [y[1] for y in b] and a[-1][1]                  # " 4" after "2 + 2 =" is greedy
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."
    rolling = [Instance("loglikelihood_rolling", {}, (text,), 0)]
    ra, rb = ours.loglikelihood_rolling(rolling, disable_tqdm=True), theirs.loglikelihood_rolling(rolling, disable_tqdm=True)
    assert ra[0] == pytest.approx(rb[0], abs=1e-4)
    gen = [Instance("generate_until", {}, ("The capital of France is", {"until": ["."], "max_gen_toks": 8}), 0)]
    assert ours.generate_until(gen, disable_tqdm=True) == theirs.generate_until(gen, disable_tqdm=True)


def test_adapter_is_registered_and_imported_lazily():
    from lm_eval.api.registry import get_model

    import smollm2.evaluate as ev

    adapter = ev.SmolLM2LM                                  # first use registers it (on its own: no test order)
    assert get_model("smollm2") is adapter is lm_eval_model()
    code = ("import sys; sys.modules['lm_eval'] = None\n"          # lm_eval not installed
            "import smollm2, smollm2.evaluate as ev\n"
            "try:\n    ev.SmolLM2LM\nexcept ImportError as e:\n    print('ImportError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "pip install 'smollm2[eval]'" in out.stdout


@pytest.mark.parametrize("endings, match", [([], "endings: expected a non-empty list"),
                                            ("not a list", "endings: expected a non-empty list"),
                                            ([" fine", ""], "tokenises to nothing"),
                                            ([" fine", 3], "endings: expected a non-empty list")])
def test_score_choices_bad_endings(real, endings, match):
    model, tok = real
    with pytest.raises(ValueError, match=match):
        score_choices(model, tok, "A man is sitting on a roof.", endings)


def test_hellaswag_bad_files_and_limits(real, tmp_path):
    model, tok = real
    with pytest.raises(ValueError, match="not found"):
        hellaswag(model, tok, path=tmp_path / "missing.txt.bz2")
    bad = {"short.txt": "ctx: a\n1\nx\ny\nz\n",                           # 5 lines
           "label.txt": "ctx: a\n7\nw\nx\ny\nz\n",                       # label out of range
           "empty_ending.txt": "ctx: a\n1\nw\n \ny\nz\n",
           "garbage.txt.bz2": "this is not bzip2"}
    for name, text in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=r"path: .*" + name.replace(".", r"\.")):
            hellaswag(model, tok, path=tmp_path / name)
    for limit in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match="limit: expected a positive integer"):
            hellaswag(model, tok, limit=limit)
    with pytest.raises(ValueError, match="indices: expected"):
        hellaswag(model, tok, indices=[10042])


def test_perplexity_and_compare_bad_input(real):
    model, tok = real
    for kwargs, match in [(dict(text=""), "text: expected a non-empty string"),
                          (dict(text="Hello there", stride=0), "stride: expected a positive integer"),
                          (dict(text="Hello there", max_length=64, stride=65), "stride: expected 1 <= stride"),
                          (dict(text="Hello there", max_length=10 ** 5), "max_length: 100000 exceeds"),
                          (dict(text="Hi"), "needs at least 2 tokens")]:
        with pytest.raises(ValueError, match=match):
            perplexity(model, tok, **kwargs)
    with pytest.raises(ValueError, match="text: expected a non-empty string"):
        compare_logits(model, model, tok, "")


def test_cli_eval_writes_json_and_rejects_bad_limits(tmp_path, capsys):
    from smollm2.cli import main

    out = tmp_path / "r" / "hellaswag.json"
    assert main(["eval", "--task", "hellaswag", "--limit", "2", "--no-progress", "--output", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["n"] == 2 and saved["task"] == "hellaswag" and len(saved["tasks"]) == 2
    assert saved["flags"]["quantize"] is None and saved["flags"]["limit"] == 2     # every flag, for the record
    assert "hellaswag: 2 tasks" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["eval", "--task", "hellaswag", "--limit", "0"])
    assert e.value.code == 2 and "argument --limit: expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "eval" in capsys.readouterr().out
