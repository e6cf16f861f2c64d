"""GGUF export (notebook 09): the file read back by our loader, by transformers and by our tokenizer builder;
quantised types within measured bounds; bad input refused with a ValueError that names the argument."""
import dataclasses

import pytest
import torch

from helpers import SMALL, load_hf_from_gguf
from smollm2 import LlamaForCausalLM, SmolLM2Config, SmolLM2Tokenizer, from_pretrained, load_tokenizer
from smollm2.export import GGUF_DTYPES, gguf_roundtrip, permute_qk, save_gguf
from smollm2.weights import unpermute_qk

CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["Hello world!", "The year 2024 had 366 days.", "  indented\tcode = f(x) ", "naïve café, 日本語, 🦙",
         "<|im_start|>user\nHi there<|im_end|>\n"]
# Bounds on the mean KL(f32 || dtype), nats, over the 27-token prompt below on SMALL (seed 0): about 10x what
# was measured on an AMD EPYC (f16 8.9e-9, bf16 1.5e-6, q8_0 1.6e-5, q4_0 2.5e-3, q4_1 2.3e-3).
MAX_KL = {"f32": 0.0, "f16": 1e-7, "bf16": 2e-5, "q8_0": 2e-4, "q4_0": 3e-2, "q4_1": 3e-2}


def small_tokenizer(vocab_size=SMALL["vocab_size"]):
    """A byte-level BPE tokenizer of `vocab_size` tokens built like SmolLM2's (digits one by one, then GPT-2's
    byte-level rules), trained in a millisecond on a few sentences: the real vocabulary would make every
    file 1.8 MB of metadata."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tk.decoder, tk.post_processor = decoders.ByteLevel(), processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(["The quick brown fox jumps over the lazy dog. Hello world, how are you today?"] * 20,
                           trainer)
    return SmolLM2Tokenizer(tk, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
                            unk_token="<|endoftext|>", chat_template=CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def tok():
    return small_tokenizer()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return LlamaForCausalLM(SmolLM2Config(**SMALL, bos_token_id=1, eos_token_id=2, pad_token_id=2)).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, small, tok):
    folder = tmp_path_factory.mktemp("gguf")
    return {dt: save_gguf(small, folder / f"small-{dt}.gguf", tok, dt) for dt in GGUF_DTYPES}


def ids_of(tok):
    return torch.tensor([tok.encode("The quick brown fox, 1234 times: hello world! How are you?")])


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_permute_qk_is_the_inverse_of_unpermute_qk():
    w = torch.randn(6 * 16, 10)
    assert torch.equal(unpermute_qk(permute_qk(w, 6), 6), w) and torch.equal(permute_qk(unpermute_qk(w, 6), 6), w)
    assert permute_qk(torch.arange(8)[:, None], 1).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


@torch.no_grad()
def test_f32_round_trip_is_bit_identical(small, tok, files):
    back = from_pretrained(files["f32"])
    assert same_weights(small, back)
    assert torch.equal(small(ids_of(tok)).logits, back(ids_of(tok)).logits)
    # everything but the initialisation scale, which GGUF does not store, comes back
    assert dataclasses.replace(back.config, initializer_range=small.config.initializer_range) == small.config


@torch.no_grad()
@pytest.mark.parametrize("dtype", list(GGUF_DTYPES))
def test_each_dtype_reloads_as_gguf_roundtrip_predicts_and_close_to_f32(small, tok, files, dtype):
    back = from_pretrained(files[dtype])
    assert same_weights(back, gguf_roundtrip(small, dtype))
    p, q = small(ids_of(tok)).logits.log_softmax(-1), back(ids_of(tok)).logits.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    assert kl <= MAX_KL[dtype], f"{dtype}: mean KL {kl:.3g} > {MAX_KL[dtype]}"
    assert (p.argmax(-1) == q.argmax(-1)).float().mean() >= (0.85 if dtype.startswith("q4") else 1.0)


@torch.no_grad()
@pytest.mark.parametrize("dtype", ["f32", "q8_0"])
def test_transformers_reads_the_export(small, tok, files, dtype):
    path = files[dtype]
    hf = load_hf_from_gguf(path)                        # transformers' own GGUF reading (tests/helpers.py)
    ours = from_pretrained(path)
    assert (hf(ids_of(tok)).logits - ours(ids_of(tok)).logits).abs().max() < 1e-5
    if dtype == "f32":
        assert (hf(ids_of(tok)).logits - small(ids_of(tok)).logits).abs().max() < 1e-5


@pytest.mark.parametrize("backend", ["smollm2", "transformers"])
def test_the_exported_tokenizer_tokenises_like_ours(tok, files, tmp_path, backend):
    back = load_tokenizer(files["f32"], cache_dir=tmp_path, backend=backend)
    assert all(back.encode(t, add_special_tokens=False) == tok.encode(t, add_special_tokens=False) for t in TEXTS)
    assert back.chat_template == CHAT_TEMPLATE
    assert (back.bos_token, back.eos_token, back.pad_token, back.unk_token) == \
        ("<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")


def test_a_shorter_tokenizer_is_padded_with_unused_tokens(tmp_path, tok):
    import gguf

    torch.manual_seed(1)
    model = LlamaForCausalLM(SmolLM2Config(**{**SMALL, "vocab_size": 336})).eval()
    path = save_gguf(model, tmp_path / "padded.gguf", tok)
    fields = gguf.GGUFReader(path).fields
    tokens, types = fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()
    assert len(tokens) == 336 and tokens[320:322] == ["[PAD320]", "[PAD321]"] and set(types[320:]) == {5}
    assert same_weights(from_pretrained(path), model)


def test_model_save_gguf_method_and_untied_lm_head(tmp_path, tok):
    torch.manual_seed(2)
    model = LlamaForCausalLM(SmolLM2Config(**SMALL, tie_word_embeddings=False)).eval()
    back = from_pretrained(model.save_gguf(tmp_path / "untied.gguf", tok, dtype="f32"))
    assert not back.config.tie_word_embeddings and same_weights(back, model)


def test_bad_input_is_refused_with_a_clear_message(tmp_path, small, tok):
    from smollm2.data import ByteTokenizer
    from smollm2.quantize import quantize_int8

    bigger = small_tokenizer()
    bigger.backend_tokenizer.add_tokens([f"<extra_{i}>" for i in range(80)])        # ids beyond 320

    for kwargs, match in [(dict(dtype="q2_k"), "dtype: expected one of"), (dict(dtype=None), "dtype"),
                          (dict(path=tmp_path), "is a directory"),
                          (dict(path=tmp_path / "missing" / "x.gguf"), "does not exist"),
                          (dict(model=torch.nn.Linear(2, 2)), "model: expected a smollm2 LlamaForCausalLM"),
                          (dict(model=quantize_int8(small)), "model: its parameters do not match"),
                          (dict(tokenizer=ByteTokenizer()), "tokenizer: expected"),
                          (dict(tokenizer=bigger), r"ids up to 3\d\d, beyond the model's vocab_size 320")]:
        args = dict(model=small, path=tmp_path / "x.gguf", tokenizer=tok, dtype="f32") | kwargs
        with pytest.raises(ValueError, match=match):
            save_gguf(args["model"], args["path"], args["tokenizer"], args["dtype"])
    assert not (tmp_path / "x.gguf").exists()


def test_rows_that_are_not_whole_blocks_and_bad_values_are_refused_and_the_old_file_kept(tmp_path, tok):
    torch.manual_seed(3)
    odd = LlamaForCausalLM(SmolLM2Config(**{**SMALL, "hidden_size": 48, "num_attention_heads": 6})).eval()
    target = tmp_path / "model.gguf"
    target.write_bytes(b"the previous export")
    with pytest.raises(ValueError, match="rows of 48 values cannot be stored as Q8_0"):
        save_gguf(odd, target, tok, "q8_0")
    with torch.no_grad():
        odd.model.layers[0].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="blk.0.ffn_up.weight: holds NaN"):
        save_gguf(odd, target, tok, "f32")
    with torch.no_grad():
        odd.model.layers[0].mlp.up_proj.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="overflow float16"):
        save_gguf(odd, target, tok, "f16")
    assert target.read_bytes() == b"the previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]           # no temporary file left behind


def test_export_command_from_a_hugging_face_folder(tmp_path, small, tok, capsys):
    from smollm2.cli import main

    small.save_pretrained(tmp_path / "hf", tokenizer=tok)
    out = tmp_path / "cli.gguf"
    assert main(["export", "--gguf", str(out), "--dtype", "q8_0", "--weights", str(tmp_path / "hf")]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert same_weights(from_pretrained(out), gguf_roundtrip(small, "q8_0"))
    with pytest.raises(SystemExit) as e:
        main(["export", "--gguf", str(tmp_path / "nowhere" / "x.gguf"), "--weights", str(tmp_path / "hf")])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err


def test_a_merged_lora_fine_tune_exports_reloads_and_answers_the_same(tmp_path, small, tok, capsys):
    """A LoRA fine-tune (notebook 07) merged and written as GGUF reloads with the fine-tuned logits and greedy
    tokens; `export --adapter DIR` (also `serve --adapter`) merges a PEFT-format adapter on the way."""
    import copy

    from smollm2.cli import main
    from smollm2.lora import apply_lora, lora_layers, merge_and_unload, save_adapter

    tuned = apply_lora(copy.deepcopy(small), r=4, alpha=8)
    torch.manual_seed(1)
    for layer in lora_layers(tuned).values():                        # a trained adapter: B no longer zero
        torch.nn.init.normal_(layer.lora_B.weight, std=0.05)
    save_adapter(tuned, tmp_path / "adapter")
    merged = merge_and_unload(tuned).eval()
    ids = ids_of(tok)
    with torch.no_grad():
        expected, base = merged(ids).logits, small(ids).logits
    assert (expected - base).abs().max() > 1e-2                     # the fine-tune changed the answers
    for path in (save_gguf(merged, tmp_path / "merged.gguf", tok, "f32"), tmp_path / "cli.gguf"):
        if path.name == "cli.gguf":
            small.save_pretrained(tmp_path / "hf", tokenizer=tok)
            assert main(["export", "--gguf", str(path), "--dtype", "f32", "--weights", str(tmp_path / "hf"),
                         "--adapter", str(tmp_path / "adapter")]) == 0
        reloaded = from_pretrained(path).eval()
        with torch.no_grad():
            torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-5, rtol=0)
        assert torch.equal(reloaded.generate(ids, max_new_tokens=8, temperature=0, eos_token_id=[]),
                           merged.generate(ids, max_new_tokens=8, temperature=0, eos_token_id=[]))
    with pytest.raises(SystemExit) as e:
        main(["export", "--gguf", str(tmp_path / "x.gguf"), "--weights", str(tmp_path / "hf"),
              "--adapter", str(tmp_path / "no-adapter")])
    assert e.value.code == 2 and "no-adapter" in capsys.readouterr().err


@pytest.mark.slow
def test_real_weights_round_trip_and_tokenizer(real_ours, real_tok, tmp_path):
    """The real model in q4_1, the type the shipped file uses: every weight already lies on q4_1's grid, so the
    file must give them back bit for bit; its tokenizer metadata is byte for byte the shipped file's."""
    from helpers import real_gguf_path
    from smollm2.tokenizer import tokenizer_metadata_sha256

    path = save_gguf(real_ours, tmp_path / "real-q4_1.gguf", real_tok, "q4_1")
    assert same_weights(from_pretrained(path), real_ours)
    assert tokenizer_metadata_sha256(path) == tokenizer_metadata_sha256(real_gguf_path())
    back = load_tokenizer(path, cache_dir=tmp_path / "cache")
    assert all(back.encode(t) == real_tok.encode(t) for t in TEXTS)
    assert abs(path.stat().st_size - real_gguf_path().stat().st_size) < 1000
