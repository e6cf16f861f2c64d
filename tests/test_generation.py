"""Tests for smollm2.generation (notebook 05): exactness against transformers, the KV cache, batching,
sampling controls, streaming, chat, the command line and input validation.

The real-weights tests use SmolLM2-135M-Instruct from the offline GGUF file, loaded once per session by
transformers and by us (tests/conftest.py).
"""
import dataclasses

import pytest
import torch

from smollm2.cli import chat_command, generate_command
from smollm2.generation import (GenerationConfig, TextStreamer, apply_min_p, apply_repetition_penalty, apply_temperature,
                                apply_top_k, apply_top_p, chat, chat_prompt, generate, stream)
from smollm2.model import LlamaForCausalLM, SmolLM2Config, decode_one_token, prefill, to_transformers
from smollm2.checkpoints import load_training_checkpoint

IM_END = 2


def tiny_model(seed: int = 0, vocab_size: int = 512, context: int = 256, eos=None) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = SmolLM2Config(vocab_size=vocab_size, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                        eos_token_id=eos)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def prompt():
    return torch.randint(0, 512, (1, 9), generator=torch.Generator().manual_seed(1))


class Recorder(torch.nn.Module):
    """Wraps a model; keeps the last-position logits of every forward call that generate makes."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config, self.logits = model, model.config, []

    def new_cache(self, *args, **kwargs):
        return self.inner.new_cache(*args, **kwargs)

    def forward(self, *args, **kwargs):
        out = self.inner(*args, **kwargs)
        self.logits.append(out.logits[:, -1])
        return out


# ------------------------------------------------------------------------------------------ real weights
@pytest.fixture(scope="module")
def real(real_hf, real_ours, real_tok):
    """(transformers' LlamaForCausalLM from the offline GGUF file, ours from the same file, our tokenizer)."""
    return real_hf, real_ours, real_tok


PROMPTS = ["The three primary colors are", "def fibonacci(n):", "First Citizen:\nBefore we proceed any further,",
           "Once upon a time, in a small village,", "The capital of Japan is",
           "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"]


@pytest.mark.slow
def test_greedy_equals_transformers_generate(real):
    hf, ours, tok = real
    n_full = 0
    for text in PROMPTS[1:4] + PROMPTS[-1:]:        # code, verse, prose, chat (the rest: test_golden_text)
        ids = torch.tensor([tok.encode(text)])
        with torch.inference_mode():
            theirs = hf.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=IM_END, pad_token_id=IM_END)
        mine = generate(ours, ids, max_new_tokens=24, temperature=0, eos_token_id=IM_END)
        assert mine.tolist() == theirs.tolist(), text
        n_full += mine.shape[1] == ids.shape[1] + 24
    assert n_full >= 3                              # at least 3 prompts x 24 new tokens compared


def test_cache_logits_equal_full_forward_real(real):
    _, ours, tok = real
    rec = Recorder(ours)
    ids = torch.tensor([tok.encode("The history of the printing press begins")])
    out = generate(rec, ids, max_new_tokens=12, temperature=0.8, seed=0, eos_token_id=[])
    T = ids.shape[1]
    with torch.inference_mode():
        full = [ours(out[:, :t]).logits[:, -1] for t in range(T, out.shape[1])]
    assert len(rec.logits) == len(full) == 12
    for step, (a, b) in enumerate(zip(rec.logits, full)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4, msg=f"step {step}")


def test_batched_equals_one_by_one_real(real):
    _, ours, tok = real
    texts = ["Hello", "The three primary colors are red,", "def add(a, b):"]
    rows = [tok.encode(t) for t in texts]
    batched = generate(ours, rows, max_new_tokens=12, temperature=0, eos_token_id=[])
    assert batched.shape == (3, max(map(len, rows)) + 12)
    for row, ids in zip(batched, rows):
        alone = generate(ours, ids, max_new_tokens=12, temperature=0, eos_token_id=[])
        assert row[-12:].tolist() == alone[len(ids):].tolist()


def test_stream_and_chat_real(real):
    _, ours, tok = real
    pieces = list(stream(ours, tok, "Once upon a time", max_new_tokens=20, temperature=0))
    ids = tok.encode("Once upon a time")
    whole = generate(ours, ids, max_new_tokens=20, temperature=0)[len(ids):].tolist()
    assert len(pieces) > 5 and "".join(pieces) == tok.decode(whole, skip_special_tokens=True)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = chat_prompt(tok, messages)
    assert tok.decode(ids).endswith("<|im_start|>assistant\n")
    answer = chat(ours, tok, messages, temperature=0, max_new_tokens=40)
    assert "Paris" in answer and "<|im_end|>" not in answer
    out = generate(ours, ids, max_new_tokens=40, temperature=0, stop_token_ids=[IM_END])
    assert out[-1].item() == IM_END                  # the reply ended at <|im_end|>, not at the length limit


def test_text_streamer_whole_characters(real):
    tok = real[2]
    text = "Tea 🍵 and 日本語 – ok"
    ids = tok.encode(text)
    streamer = TextStreamer(tok)
    pieces = [streamer.push(i) for i in ids] + [streamer.flush()]
    assert len(ids) > len(text.split())               # some characters span several tokens
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)
    partial = TextStreamer(tok)                       # a character cut off at the end is held back, then flushed
    assert [partial.push(i) for i in tok.encode("🍵")[:-1]] == [""] * (len(tok.encode("🍵")) - 1)
    assert partial.flush().endswith("\ufffd")


# ------------------------------------------------------------------------------------------ tiny model
def test_cache_logits_equal_full_forward(tiny, prompt):
    rec = Recorder(tiny)
    out = generate(rec, prompt, max_new_tokens=40, temperature=1.0, seed=0)
    with torch.inference_mode():
        full = [tiny(out[:, :t]).logits[:, -1] for t in range(9, 49)]
    assert len(rec.logits) == 40
    for a, b in zip(rec.logits, full):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_greedy_equals_naive_loop(tiny, prompt):
    ids = prompt
    with torch.inference_mode():
        for _ in range(30):
            ids = torch.cat([ids, tiny(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(generate(tiny, prompt, max_new_tokens=30, temperature=0), ids)
    assert torch.equal(generate(tiny, prompt, max_new_tokens=30, do_sample=False), ids)
    assert torch.equal(tiny.generate(prompt, max_length=39, temperature=0), ids)   # the model's method delegates


def test_sampling_equals_transformers(tiny, prompt):
    """The full pipeline (penalty, temperature, top-k, top-p, min-p, multinomial) draws what transformers draws."""
    hf = to_transformers(tiny)
    settings = [dict(temperature=0.9, top_k=50, top_p=0.9), dict(temperature=1.3, top_k=0, min_p=0.05, repetition_penalty=1.3),
                dict(temperature=0.7, top_k=20, top_p=0.95, min_p=0.02, repetition_penalty=1.1)]
    for kw in settings:                          # top_k always given: transformers' default is 50, ours off
        torch.manual_seed(7)
        with torch.inference_mode():
            theirs = hf.generate(prompt, max_new_tokens=30, do_sample=True, eos_token_id=None, pad_token_id=0, **kw)
        torch.manual_seed(7)
        mine = generate(tiny, prompt, max_new_tokens=30, **kw)        # generator=None: the global RNG, like transformers
        assert mine.tolist() == theirs.tolist(), kw


def test_batched_equals_one_by_one(tiny):
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (4, 11, 7, 1)]
    for kw in (dict(temperature=0), dict(temperature=0, repetition_penalty=1.5)):
        batched = generate(tiny, rows, max_new_tokens=15, **kw)
        for row, ids in zip(batched, rows):
            assert row[-15:].tolist() == generate(tiny, ids, max_new_tokens=15, **kw)[len(ids):].tolist()
    padded = torch.zeros(2, 11, dtype=torch.long)                     # the same with a tensor + attention_mask
    mask = torch.zeros(2, 11, dtype=torch.long)
    for i, ids in enumerate(rows[:2]):
        padded[i, 11 - len(ids):], mask[i, 11 - len(ids):] = torch.tensor(ids), 1
    out = generate(tiny, padded, attention_mask=mask, max_new_tokens=15, temperature=0)
    assert out[:, -15:].tolist() == generate(tiny, rows[:2], max_new_tokens=15, temperature=0)[:, -15:].tolist()


def test_stop_tokens_and_padding(tiny):
    g = torch.Generator().manual_seed(4)
    rows = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (5, 8)]
    free = generate(tiny, rows, max_new_tokens=20, temperature=1.0, seed=0)
    stop = free[0, 8 + 3].item()                                      # row 0's 4th new token
    assert stop not in free[0, 8:8 + 3].tolist()
    out = generate(tiny, rows, max_new_tokens=20, temperature=1.0, seed=0, eos_token_id=stop, pad_token_id=511)
    row1 = free[1, 8:].tolist()
    assert stop not in row1                                           # row 1 never draws the stop token
    assert out.shape == (2, 8 + 20)                                   # so the batch runs to the limit
    assert out[0, 8:].tolist() == free[0, 8:12].tolist() + [511] * 16  # row 0: the stop token, then padding
    assert out[1, 8:].tolist() == row1                                # row 1: unchanged by row 0's stop
    single = generate(tiny, rows[0], max_new_tokens=20, temperature=1.0, seed=0, stop_token_ids=[stop])
    assert single.shape[0] in range(len(rows[0]) + 1, len(rows[0]) + 21) and single[-1].item() == stop


def test_stop_strings(real):
    _, ours, tok = real
    ids = tok.encode("Count: one, two, three, four,")
    free = generate(ours, ids, max_new_tokens=30, temperature=0, eos_token_id=[])
    text = tok.decode(free[len(ids):].tolist())
    assert text.startswith(" five, six, seven,")                     # greedy: the model counts on
    word = text.split(",")[1].strip()                                 # "six", a word it is going to write
    out = generate(ours, ids, max_new_tokens=30, temperature=0, eos_token_id=[], stop_strings=[word], tokenizer=tok)
    assert len(out) < len(free) and out.tolist() == free[:len(out)].tolist()       # the same tokens, cut short
    assert word in tok.decode(out[len(ids):].tolist())                             # at the token that spells it
    assert word not in tok.decode(out[len(ids):-1].tolist())


def test_smollm2_tokenizer_backend(real):
    """Streaming and chat also work with the transformers-free SmolLM2Tokenizer."""
    from smollm2.tokenizer import load_tokenizer

    _, ours, tok = real
    small_tok = load_tokenizer("smollm2-135m-instruct", backend="smollm2")
    messages = [{"role": "user", "content": "Say hi."}]
    assert chat_prompt(small_tok, messages) == chat_prompt(tok, messages)
    assert chat(ours, small_tok, messages, temperature=0, max_new_tokens=12) == \
        chat(ours, tok, messages, temperature=0, max_new_tokens=12)
    text = "Tea 🍵 and 日本語"
    streamer = TextStreamer(small_tok)
    assert "".join([streamer.push(i) for i in small_tok.encode(text)] + [streamer.flush()]) == text


def test_seed_reproducible_and_top_k_one_is_greedy(tiny, prompt):
    kw = dict(max_new_tokens=30, temperature=1.0, top_p=0.95)
    a = generate(tiny, prompt, seed=123, **kw)
    assert torch.equal(a, generate(tiny, prompt, seed=123, **kw))
    assert torch.equal(a, generate(tiny, prompt, generator=torch.Generator().manual_seed(123), **kw))
    assert any(not torch.equal(a, generate(tiny, prompt, seed=s, **kw)) for s in range(3))
    greedy = generate(tiny, prompt, max_new_tokens=30, temperature=0)
    for s in range(3):
        assert torch.equal(generate(tiny, prompt, max_new_tokens=30, top_k=1, seed=s), greedy)


def test_processors_equal_transformers():
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1000, generator=g) * 4
    history = torch.randint(0, 1000, (3, 40), generator=g)
    seen = torch.zeros(3, 1000, dtype=torch.bool).scatter_(1, history, True)
    assert torch.equal(apply_temperature(logits, 0.6), TemperatureLogitsWarper(0.6)(history, logits))
    for k in (1, 7, 1000, 5000):
        assert torch.equal(apply_top_k(logits, k), TopKLogitsWarper(k)(history, logits))
    for p in (0.01, 0.5, 0.9, 1.0):
        assert torch.equal(apply_top_p(logits, p), TopPLogitsWarper(p)(history, logits))
    for p in (0.0, 0.1, 0.9, 1.0):
        assert torch.equal(apply_min_p(logits, p), MinPLogitsWarper(p)(history, logits))
    for r in (0.5, 1.3, 3.0):
        assert torch.equal(apply_repetition_penalty(logits, seen, r), RepetitionPenaltyLogitsProcessor(r)(history, logits))


def test_context_limit(tiny):
    ids = torch.zeros(1, 250, dtype=torch.long)
    assert generate(tiny, ids, max_new_tokens=6, temperature=0).shape == (1, 256)   # exactly the context: fine
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(tiny, ids, max_new_tokens=7, temperature=0)
    with pytest.raises(ValueError, match="max_length"):
        generate(tiny, ids, max_length=257, temperature=0)


# Golden output, in the style of llama2.c's test_all.py: a tiny model made from a fixed seed must keep producing
# exactly these tokens (generated once with this code, torch 2.13 CPU, and pasted here). It pins the whole
# path — initialisation, forward, cache, processors, sampling — against silent regressions. Regenerate it only
# for an intended change, and say why in the commit.
# Greedy uses a repetition penalty: without one a random tied-embedding model just repeats its last token.
GOLDEN_GREEDY = [5345, 32062, 42, 22373, 21243, 44822, 44822, 23714, 925, 43912, 41248, 11802, 26679, 9322, 24691,
                 9963, 2378, 26582, 26582, 26582, 26582, 26582, 26582, 35557, 40275, 26221, 26221]
GOLDEN_SAMPLED = [5345, 32062, 42, 19826, 3913, 30621, 28298, 44822, 21411, 1754, 9648, 40693, 47593, 38282, 21817,
                  39218, 28425, 19123, 6548, 34127, 16221, 9603, 27004, 36802, 7951, 12094, 38179]
GOLDEN_TEXT = (" Biblical Americansorithms entrenchedtrimatomER converted confluenceDELETE managerialø negativity SeedsHC"
               " arms Mumbai filed critically resistor Quantitative Method bike buffers")


def golden_model():
    return tiny_model(seed=1337, vocab_size=49152, context=128)


def test_golden_tiny_model():
    model = golden_model()
    ids = [5345, 32062, 42]                                           # "First Citizen:" in SmolLM2's tokenizer
    greedy = generate(model, ids, max_new_tokens=24, temperature=0, repetition_penalty=2.0).tolist()
    sampled = generate(model, ids, max_new_tokens=24, temperature=0.9, top_k=200, top_p=0.95, min_p=0.01,
                       repetition_penalty=1.2, seed=42).tolist()
    assert greedy == GOLDEN_GREEDY
    assert sampled == GOLDEN_SAMPLED
    assert len(set(sampled[3:])) > 12 and len(set(greedy[3:])) > 10  # not a trivially constant output


def test_golden_text(real):
    tok = real[2]
    model = golden_model()
    text = "".join(stream(model, tok, "First Citizen:", max_new_tokens=24, temperature=0.9, top_k=200,
                          top_p=0.95, min_p=0.01, repetition_penalty=1.2, seed=42))
    assert text == GOLDEN_TEXT


# ------------------------------------------------------------------------------------------ bad input
BAD = [
    (dict(input_ids=[]), "input_ids"),
    (dict(input_ids=torch.zeros(1, 0, dtype=torch.long)), "input_ids"),
    (dict(input_ids=[[1, 2], []]), "input_ids"),
    (dict(input_ids=torch.zeros(1, 300, dtype=torch.long)), "input_ids"),
    (dict(input_ids=torch.full((1, 3), 999)), "input_ids"),
    (dict(input_ids=torch.zeros(1, 3)), "input_ids"),
    (dict(max_length=9), "max_length"),
    (dict(max_length=5), "max_length"),
    (dict(max_length=None), "max_length"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=300), "max_new_tokens"),
    (dict(temperature=-0.1), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.01), "top_p"),
    (dict(top_p=-1.0), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(top_k=2.5), "top_k"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(repetition_penalty=-1.0), "repetition_penalty"),
    (dict(min_p=-0.1), "min_p"),
    (dict(min_p=1.5), "min_p"),
    (dict(attention_mask=torch.ones(1, 4)), "attention_mask"),
    (dict(attention_mask=torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 0]])), "attention_mask"),
    (dict(stop_strings=["x"]), "stop_strings"),
    (dict(seed=1, generator=torch.Generator()), "seed"),
]


@pytest.mark.parametrize("kwargs, name", BAD, ids=[f"{n}-{i}" for i, (_, n) in enumerate(BAD)])
def test_bad_input(tiny, prompt, kwargs, name):
    kwargs = {"input_ids": prompt, "max_new_tokens": None if "max_length" in kwargs else 5, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate(tiny, **kwargs)


def test_bad_input_stream_and_chat(tiny):
    class Tok:
        def encode(self, text):
            return [ord(c) % 512 for c in text]

        def decode(self, ids, skip_special_tokens=True):
            return "".join(chr(i) for i in ids)

    with pytest.raises(ValueError, match="prompt"):
        stream(tiny, Tok(), "")
    with pytest.raises(ValueError, match="top_p"):                   # raised at the call, not at the first next()
        stream(tiny, Tok(), "hi", top_p=2.0)
    with pytest.raises(ValueError, match="messages"):
        chat(tiny, Tok(), [])
    ids = generate(tiny, Tok().encode("hi"), max_new_tokens=5, temperature=0)
    assert "".join(stream(tiny, Tok(), "hi", max_new_tokens=5, temperature=0)) == Tok().decode(ids[2:].tolist())


# ------------------------------------------------------------------------------------------ the decode core
CONFIG_BAD = [
    (dict(max_new_tokens=0), "max_new_tokens: must be at least 1, got 0"),
    (dict(max_length=None), "max_length: give max_length (prompt included) or max_new_tokens"),
    (dict(temperature=-0.1), "temperature: must be a number >= 0 (0 = greedy), got -0.1"),
    (dict(temperature=True), "temperature: must be a number >= 0 (0 = greedy), got True"),
    (dict(top_k=2.5), "top_k: must be an integer >= 0 (0 or None = off), got 2.5"),
    (dict(top_p=0.0), "top_p: must be in (0, 1] (1 or None = off), got 0.0"),
    (dict(min_p=1.5), "min_p: must be in [0, 1] (0 or None = off), got 1.5"),
    (dict(repetition_penalty=0.0), "repetition_penalty: must be > 0 (1 or None = off), got 0.0"),
    (dict(stop_strings=["ok", ""]), "stop_strings: needs non-empty strings and tokenizer= to turn tokens into text"),
]


@pytest.mark.parametrize("kwargs, message", CONFIG_BAD, ids=[m.split(":")[0] for _, m in CONFIG_BAD])
def test_generation_config_validates_when_made(tiny, prompt, kwargs, message):
    import re

    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        GenerationConfig(**kwargs)                                    # no model, no prompt needed
    good = GenerationConfig()
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        dataclasses.replace(good, **kwargs)                           # a copy is validated again
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        generate(tiny, prompt, **{"max_new_tokens": None if "max_length" in kwargs else 5, **kwargs})   # same


def test_generation_config_fields():
    c = GenerationConfig(stop_strings="END", temperature=0)
    assert c.stop_strings == ("END",) and c.greedy and not c.penalises_repetition
    assert GenerationConfig(stop_strings=[]).stop_strings is None
    assert not GenerationConfig().greedy and GenerationConfig(do_sample=False).greedy
    assert GenerationConfig(repetition_penalty=1.2).penalises_repetition
    assert not GenerationConfig(repetition_penalty=1.0).penalises_repetition
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'temperature'"):
        c.temperature = -1.0                                          # validated once: it cannot change after


def test_prefill_and_decode_one_token_equal_full_forward(tiny):
    g = torch.Generator().manual_seed(8)
    rows = [torch.randint(0, 512, (n,), generator=g).tolist() for n in (6, 9)]
    ids = torch.tensor([[0] * 3 + rows[0], rows[1]])                  # (2, 9), row 0 left-padded
    mask = torch.tensor([[0] * 3 + [1] * 6, [1] * 9])
    new = torch.randint(0, 512, (2, 5), generator=g)                  # 5 tokens fed one by one
    with torch.inference_mode():
        for padded in (False, True):
            x, m = (ids, mask) if padded else (ids[1:], None)
            cache = tiny.new_cache(x.shape[0], 14)
            steps = [prefill(tiny, x, m, cache)]                       # (B, V)
            pos = None if m is None else m.sum(-1, keepdim=True)      # (B, 1)
            for i in range(5):
                full_mask = None if m is None else torch.cat([m, torch.ones(2, i + 1, dtype=torch.long)], 1)
                steps.append(decode_one_token(tiny, new[-x.shape[0]:, i], cache, full_mask,
                                              None if pos is None else pos + i))
            for b in range(x.shape[0]):
                real = rows[b] if padded else rows[1]
                for i, logits in enumerate(steps):
                    seq = torch.tensor([real + new[-x.shape[0]:][b, :i].tolist()])
                    full = tiny(seq).logits[0, -1]                     # no cache, no padding
                    torch.testing.assert_close(logits[b], full, rtol=0, atol=1e-4)
    assert cache.length == 14


def test_config_and_keywords_agree(tiny, prompt):
    kw = dict(max_new_tokens=20, temperature=0.9, top_k=40, top_p=0.9, repetition_penalty=1.2, seed=3)
    ref = generate(tiny, prompt, **kw)
    config = GenerationConfig(**kw)
    assert torch.equal(generate(tiny, prompt, config=config), ref)
    assert torch.equal(tiny.generate(prompt, config=config), ref)
    assert torch.equal(generate(tiny, prompt, config=dataclasses.replace(config, seed=4), seed=3), ref)  # keyword wins
    greedy = generate(tiny, prompt, max_new_tokens=20, temperature=0)
    assert torch.equal(generate(tiny, prompt, 100, 0, config=config), greedy)      # non-default temperature wins
    assert generate(tiny, prompt, 15, config=GenerationConfig(temperature=0)).shape == (1, 15)
    assert torch.equal(generate(tiny, prompt, config=GenerationConfig(max_length=29, temperature=0)), greedy)
    with pytest.raises(TypeError, match="unexpected keyword argument 'top_q'"):
        generate(tiny, prompt, top_q=0.9)
    with pytest.raises(ValueError, match="config: expected a GenerationConfig, got dict"):
        generate(tiny, prompt, config=dict(temperature=0))


def test_chat_with_config(real):
    _, ours, tok = real
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    by_keywords = chat(ours, tok, messages, temperature=0, max_new_tokens=40)
    assert chat(ours, tok, messages, config=GenerationConfig(temperature=0, max_new_tokens=40)) == by_keywords
    assert "Paris" in by_keywords and "<|im_end|>" not in by_keywords         # stopped at <|im_end|> with a config too


# ------------------------------------------------------------------------------------------ checkpoints and CLI
def test_load_training_checkpoint_and_cli_generate(tmp_path, capsys):
    model = tiny_model(seed=5, vocab_size=49152, context=128)
    state = {"format": 1, "step": 7, "model": model.state_dict(), "model_config": model.config.to_dict()}
    torch.save(state, tmp_path / "checkpoint_step_7.pt")
    torch.save({"model": {}, "model_config": {}}, tmp_path / "checkpoint_step_3.pt")   # older: not chosen
    loaded = load_training_checkpoint(tmp_path)                                # a folder: the newest checkpoint
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    assert generate_command(["First Citizen:", "--checkpoint", str(tmp_path / "checkpoint_step_7.pt"), "--greedy",
                             "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out
    from smollm2.tokenizer import load_tokenizer

    tok = load_tokenizer("smollm2-135m-instruct")
    expected = generate(loaded, tok.encode("First Citizen:"), max_new_tokens=8, temperature=0)[3:].tolist()
    assert printed == "First Citizen:" + tok.decode(expected, skip_special_tokens=True) + "\n"   # prompt echoed


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        generate_command(["Hi", "--checkpoint", str(tmp_path / "missing.pt")])
    assert e.value.code == 2 and f"checkpoint: no such file or folder: {tmp_path / 'missing.pt'}" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        generate_command(["Hi", "--checkpoint", str(tmp_path / "junk.pt")])
    assert e.value.code == 2 and "junk.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        generate_command(["Hi", "--checkpoint", "a", "--weights", "b"])
    assert e.value.code == 2 and "--weights: not allowed with argument --checkpoint" in capsys.readouterr().err



def test_cli_checkpoint_needs_the_tokenizer_it_was_trained_with(tmp_path, capsys, real_tok):
    from smollm2.data import ByteTokenizer
    from smollm2.train import ModelTrainer

    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 100, encoding="utf-8")
    ck = tmp_path / "ck"
    trainer = ModelTrainer(tiny_model(seed=7, vocab_size=256, context=64), ByteTokenizer(), text, batch_size=2,
                           max_length=32, checkpoint_dir=ck, target_steps=1, sample_interval=0, eval_interval=0,
                           eval_batches=1, progress=False, device="cpu", dtype="float32")
    trainer.train()                                                         # a real checkpoint, train_config included
    loaded = load_training_checkpoint(ck, tokenizer=ByteTokenizer())        # the tokenizer it was trained with
    assert torch.equal(loaded.lm_head.weight, trainer.model.lm_head.weight)
    with pytest.raises(ValueError, match="checkpoint_step_1.pt was trained with a different tokenizer"):
        load_training_checkpoint(ck, tokenizer=real_tok)
    with pytest.raises(SystemExit) as e:
        generate_command(["Hi", "--checkpoint", str(ck)])                   # default: the 49,152-token tokenizer
    err = capsys.readouterr().err
    assert e.value.code == 2 and "different tokenizer" in err and "--tokenizer" in err


@pytest.mark.parametrize("error", [PermissionError(13, "Permission denied"), MemoryError("out of memory")])
def test_cli_read_errors_exit_1(tmp_path, capsys, monkeypatch, error):
    """A checkpoint that cannot be read (permissions, disk, memory) is not bad input: `error: ...`, status 1."""
    model = tiny_model(seed=5, vocab_size=49152, context=64)
    torch.save({"step": 2, "model": model.state_dict(), "model_config": model.config.to_dict()},
               tmp_path / "checkpoint_step_2.pt")

    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", failing_load)
    for where in (tmp_path, tmp_path / "checkpoint_step_2.pt"):             # a folder, a file
        assert generate_command(["Hi", "--checkpoint", str(where)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "cannot read checkpoint" in err and "checkpoint_step_2.pt" in err
        assert type(error).__name__ in err and err.count("\n") == 1          # one line, no traceback
    assert chat_command(["--message", "Hi", "--checkpoint", str(tmp_path)]) == 1
    assert "cannot read checkpoint" in capsys.readouterr().err

def test_cli_chat_loop(tmp_path, capsys, monkeypatch):
    import io

    import smollm2.generation as gen

    model = tiny_model(seed=6, vocab_size=49152, context=512)
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.config.to_dict()}, tmp_path / "checkpoint_step_1.pt")
    seen, real_chat_prompt = [], gen.chat_prompt

    def recording_chat_prompt(tokenizer, messages):                  # every reply starts from the chat prompt
        seen.append([dict(m) for m in messages])
        return real_chat_prompt(tokenizer, messages)

    monkeypatch.setattr(gen, "chat_prompt", recording_chat_prompt)
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n\nHow are you?\n/reset\nAnd again\n"))
    base = ["--checkpoint", str(tmp_path), "--greedy", "--max-new-tokens", "5"]
    assert chat_command(base) == 0                                     # three turns, then EOF ends the loop
    assert [[m["content"] for m in msgs if m["role"] == "user"] for msgs in seen] == \
        [["Hello there"], ["Hello there", "How are you?"], ["And again"]]      # history kept, then reset
    assert [m["role"] for m in seen[1]] == ["user", "assistant", "user"]
    assert capsys.readouterr().out.count("\n") >= 3
    assert chat_command(base + ["--message", "Hi", "--system", "Be brief."]) == 0
    assert seen[-1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_load_training_checkpoint_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no loadable checkpoint_step_N.pt file in the folder {tmp_path}"):
        load_training_checkpoint(tmp_path)
    model = tiny_model(seed=5)
    torch.save({"step": 4, "model": model.state_dict(), "model_config": model.config.to_dict()},
               tmp_path / "checkpoint_step_4.pt")
    (tmp_path / "checkpoint_step_9.pt").write_bytes(b"truncated")               # newest is broken
    with pytest.warns(UserWarning, match="checkpoint_step_9.pt cannot be loaded"):
        loaded = load_training_checkpoint(tmp_path)                          # falls back to step 4
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


@torch.inference_mode()
def test_decode_state_keeps_rows_like_decoding_them_alone(tiny):
    """`DecodeState.keep` drops rows mid-decode: the rows kept go on exactly as a state that only ever held them."""
    from smollm2.model import DecodeState

    ids = torch.randint(0, tiny.config.vocab_size, (3, 6), generator=torch.Generator().manual_seed(0))
    both, alone = DecodeState.start(tiny, ids, None, 9), DecodeState.start(tiny, ids[[2, 0]], None, 9)
    tok = torch.tensor([5, 6, 7])
    both.feed(tok)
    alone.feed(tok[[2, 0]])
    both.keep([2, 0])
    both.feed(torch.tensor([8, 9]))
    alone.feed(torch.tensor([8, 9]))
    torch.testing.assert_close(both.logits, alone.logits, rtol=1e-5, atol=1e-5)
    assert both.mask is None and both.cache.length == alone.cache.length == 8
