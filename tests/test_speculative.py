"""Speculative decoding (notebook 08): exactly the target's greedy tokens, exactly the target's distribution."""
from dataclasses import fields

import pytest
import torch

from smollm2.data import ByteTokenizer
from smollm2.generation import GenerationConfig, generate, stream
from smollm2.speculative import DraftModel, PromptLookup, accept_sampled, lookup_draft

from helpers import tiny_model as tiny


@pytest.fixture(scope="module")
def target():
    return tiny(0)


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    """Prompts with repeats in them (so that lookup finds n-grams) and of different lengths."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        part = torch.randint(3, 320, (4 + i % 5,), generator=g).tolist()
        out.append(part + torch.randint(3, 320, (3,), generator=g).tolist() + part[: 2 + i % 3])
    return out


def test_lookup_draft_copies_what_followed_the_first_occurrence():
    row = torch.tensor([5, 6, 7, 8, 9, 1, 5, 6, 7])
    assert lookup_draft(row, 3).tolist() == [8, 9, 1]          # "5 6 7" occurred at 0: propose what followed
    assert lookup_draft(torch.tensor([1, 2, 7, 1, 2, 8, 1, 2]), 2).tolist() == [8, 1]   # the latest occurrence
    assert lookup_draft(row, 10).tolist() == [8, 9, 1, 5, 6, 7]  # never past the end of the text
    assert lookup_draft(torch.tensor([1, 2, 3, 4]), 3).tolist() == []   # nothing recurs
    assert lookup_draft(torch.tensor([4, 2, 3, 4]), 2).tolist() == [2, 3]   # a 1-gram is enough


@pytest.mark.parametrize("make", [lambda t: PromptLookup(num_tokens=1), lambda t: PromptLookup(num_tokens=4),
                                  lambda t: PromptLookup(num_tokens=10, max_ngram=1),
                                  lambda t: DraftModel(tiny(7), num_tokens=3), lambda t: DraftModel(t, 5),
                                  lambda t: PromptLookup(6, fallback=DraftModel(tiny(8), 3))],
                         ids=["lookup-k1", "lookup-k4", "lookup-1gram", "draft-other", "draft-self", "lookup-or-draft"])
def test_greedy_is_token_for_token_plain_greedy(target, make):
    spec = make(target)
    for p in prompts(8):
        plain = generate(target, p, max_new_tokens=24, temperature=0, eos_token_id=[])
        fast = spec.generate(target, p, max_new_tokens=24, temperature=0, eos_token_id=[])
        assert fast.tolist() == plain.tolist()
        assert spec.stats.new_tokens == 24 and 1 <= spec.stats.target_forwards <= 24


def test_left_padded_batches_match_plain_greedy(target):
    batch = prompts(6, seed=3)
    plain = generate(target, batch, max_new_tokens=20, temperature=0, eos_token_id=[])
    for spec in (PromptLookup(num_tokens=5), DraftModel(tiny(9), num_tokens=4),
                 PromptLookup(4, fallback=DraftModel(tiny(9), 2))):
        fast = spec.generate(target, batch, max_new_tokens=20, temperature=0, eos_token_id=[])
        assert fast.tolist() == plain.tolist()


def test_stream_is_plain_streams_text():
    """`drafter.stream` prints what notebook 05's `stream` prints, piece for piece joined."""
    target, tok = tiny(5, vocab_size=256), ByteTokenizer()
    plain = "".join(stream(target, tok, "abcab abcab ab", max_new_tokens=20, temperature=0, eos_token_id=[]))
    for spec in (PromptLookup(num_tokens=4), DraftModel(tiny(6, vocab_size=256), 3)):
        fast = spec.stream(target, tok, "abcab abcab ab", max_new_tokens=20, temperature=0, eos_token_id=[])
        assert "".join(fast) == plain and spec.stats.new_tokens == 20


def test_the_target_itself_as_draft_accepts_everything(target):
    spec = DraftModel(target, num_tokens=4)
    spec.generate(target, prompts(1)[0], max_new_tokens=25, temperature=0, eos_token_id=[])
    s = spec.stats
    assert s.acceptance_rate == 1.0
    assert s.target_forwards == 5                           # 5 rounds of 4 drafts + 1 (prefill in the first)
    assert s.tokens_per_forward == pytest.approx(25 / 5)


def test_stops_like_plain_generate(target):
    batch = prompts(4, seed=5)
    plain = generate(target, batch, max_new_tokens=30, temperature=0, eos_token_id=[])
    stop = int(plain[0, -20])                               # a token the first row emits after ~10 new tokens
    ref = generate(target, batch, max_new_tokens=30, temperature=0, eos_token_id=stop, pad_token_id=1)
    for spec in (PromptLookup(num_tokens=6), DraftModel(tiny(4), 3)):
        fast = spec.generate(target, batch, max_new_tokens=30, temperature=0, eos_token_id=stop, pad_token_id=1)
        assert fast.tolist() == ref.tolist()
    assert (ref[0, -5:] == 1).all()                           # the first row did stop and pad


def exact_two_token_probs(model, prompt: list[int], temperature: float) -> torch.Tensor:
    """(V, V): the target's exact probability of each pair of first two new tokens."""
    V = model.config.vocab_size
    with torch.no_grad():
        first = (model(torch.tensor([prompt])).logits[0, -1] / temperature).softmax(-1)            # (V,)
        pairs = torch.tensor([prompt + [t] for t in range(V)])
        second = (model(pairs).logits[:, -1] / temperature).softmax(-1)                            # (V, V)
    return first[:, None] * second


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs.flatten() * counts.sum()
    keep = expected > 5                                          # the usual validity rule; the rest pooled
    c, e = counts.flatten().double(), expected.double()
    return float(((c[keep] - e[keep]) ** 2 / e[keep]).sum() + (c[~keep].sum() - e[~keep].sum()) ** 2
                 / e[~keep].sum().clamp(min=1e-9))


@pytest.mark.parametrize("kind", ["draft", "lookup", "lookup-or-draft"])
def test_sampling_keeps_the_target_distribution(kind):
    """8,000 rows of one prompt, two new tokens each: the joint counts fit the target's exact probabilities
    (chi-square far below the 0.01% critical value), and the draft's own distribution does not fit them."""
    V, N, T = 12, 8000, 0.8
    target, draft = tiny(11, vocab_size=V), tiny(12, vocab_size=V)
    prompt = [1, 2, 3, 1, 2, 4, 1, 2]                          # lookup finds "1 2" and proposes 3 or 4
    spec = {"draft": DraftModel(draft, num_tokens=3), "lookup": PromptLookup(num_tokens=3, max_ngram=2),
            "lookup-or-draft": PromptLookup(num_tokens=3, max_ngram=3, fallback=DraftModel(draft, 2))}[kind]
    out = spec.generate(target, [prompt] * N, max_new_tokens=2, temperature=T, eos_token_id=[], seed=0)[:, -2:]
    counts = torch.bincount(out[:, 0] * V + out[:, 1], minlength=V * V).view(V, V)
    exact = exact_two_token_probs(target, prompt, T)
    critical = 220.0                                             # chi-square, ~143 dof, p = 1e-4: about 215
    assert chi_square(counts, exact) < critical
    assert spec.stats.drafted > 0 and 0 < spec.stats.acceptance_rate < 1
    wrong = exact_two_token_probs(draft, prompt, T) if kind != "lookup" else exact.roll(1, dims=1)
    assert chi_square(counts, wrong) > 10 * critical            # the test can tell a wrong distribution


def test_accept_sampled_residual_rule():
    """A certain draft (q one-hot) that the target gives probability 0.3: kept 30% of the time; when rejected,
    the token comes from p with the draft's token removed."""
    p = torch.tensor([[[0.3, 0.5, 0.2], [1 / 3, 1 / 3, 1 / 3]]]).repeat(20000, 1, 1)    # (B, 2, V)
    drafts = torch.zeros(20000, 1, dtype=torch.long)
    accepted, fallback = accept_sampled(drafts, drafts >= 0, p, None, torch.Generator().manual_seed(0))
    assert abs(accepted.float().mean().item() - 0.3) < 0.015
    rejected = fallback[accepted == 0, 0]
    assert (rejected != 0).all()                                  # the draft's token is never resampled
    assert abs((rejected == 1).float().mean().item() - 0.5 / 0.7) < 0.015


def test_bad_options_are_clear_errors(target):
    with pytest.raises(ValueError, match="num_tokens must be an integer >= 1, got 0"):
        PromptLookup(num_tokens=0)
    with pytest.raises(ValueError, match="max_ngram"):
        PromptLookup(max_ngram=-1)
    with pytest.raises(ValueError, match="draft model's vocabulary"):
        DraftModel(tiny(0, vocab_size=64)).generate(target, [1, 2, 3], max_new_tokens=3)
    with pytest.raises(ValueError, match="expected a smollm2 model"):
        DraftModel("smollm2-135m")
    with pytest.raises(ValueError, match="fallback: expected a DraftModel, got PromptLookup"):
        PromptLookup(fallback=PromptLookup())
    for spec in (PromptLookup(), DraftModel(tiny(0))):
        with pytest.raises(ValueError, match="repetition_penalty: not supported with speculative"):
            spec.generate(target, [1, 2, 3], max_new_tokens=3, repetition_penalty=1.3)
        with pytest.raises(ValueError, match="repetition_penalty: not supported with speculative"):
            spec.stream(target, ByteTokenizer(), "abc", max_new_tokens=3, repetition_penalty=1.3)
    assert "speculative" not in {f.name for f in fields(GenerationConfig)}     # notebook 05 knows no drafter


@pytest.mark.slow
def test_real_weights_copy_request_is_exact_and_mostly_accepted(real_ours, real_tok):
    """SmolLM2-135M-Instruct asked to fix the punctuation of a story writes it back: prompt lookup drafts the
    story, the output is plain greedy's to the token, and most forwards keep several tokens."""
    from smollm2.generation import chat_prompt

    story = ("Once upon a time there was a little cat named Tom. Tom lived in a small house with a girl named "
             "Lily. Every morning Lily gave Tom a bowl of milk. One day Tom saw a bird in the garden.")
    ids = chat_prompt(real_tok, [{"role": "user", "content": "Fix the punctuation in this story and write it "
                                                            "out in full:\n\n" + story}])
    plain = generate(real_ours, ids, max_new_tokens=32, temperature=0)
    spec = PromptLookup(num_tokens=8)
    fast = spec.generate(real_ours, ids, max_new_tokens=32, temperature=0)
    assert fast.tolist() == plain.tolist()
    assert spec.stats.tokens_per_forward > 2.5, spec.stats


@pytest.mark.slow
def test_cli_speculative_prints_plain_greedy_text(capsys, monkeypatch, real_ours):
    import smollm2.weights
    from smollm2.cli import main

    def session_copy(source, **kwargs):                          # the CLI's three runs share the session's weights
        assert source == "smollm2-135m-instruct", source
        return real_ours

    monkeypatch.setattr(smollm2.weights, "from_pretrained", session_copy)
    args = ["generate", "Once upon a time, Tom the cat", "--greedy", "--max-new-tokens", "12"]
    assert main(args) == 0
    plain = capsys.readouterr().out
    assert main(args + ["--speculative", "both", "--draft-tokens", "3"]) == 0
    assert capsys.readouterr().out == plain
    with pytest.raises(SystemExit) as exit_:
        main(args + ["--speculative", "lookup", "--draft-tokens", "0"])
    assert exit_.value.code == 2                                  # refused by the parser, before any decoding
    assert "argument --draft-tokens: expected an integer >= 1, got '0'" in capsys.readouterr().err
