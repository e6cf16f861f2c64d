"""Never lose a run, never trust bad bytes (issue 15): crafted files, unusable caches, the one atomic writer."""
import json
import os

import gguf
import numpy as np
import pytest
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config
from smollm2.io import TEMP_NAME, atomic_write
from smollm2.weights import from_pretrained, save_pretrained

from helpers import tiny_config

# the crafted GGUF files hold F32 weights and stay under 200 KB: 96 tokens, one narrow layer, context 64
TINY = tiny_config(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                   max_position_embeddings=64)


# ---- the one atomic writer -------------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    atomic_write(target, lambda p: open(p, "w").write("three"))
    assert target.read_text() == "three" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]

    def crash(src, dst):                                   # the rename fails: the old file stays whole
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "four")
    assert target.read_text() == "three" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_atomic_write_temp_names_are_unique_per_process_and_call(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (seen.append(os.path.basename(src)), real_replace(src, dst)))
    for _ in range(3):
        atomic_write(tmp_path / "f.bin", b"x")
    assert len(set(seen)) == 3
    for name in seen:
        m = TEMP_NAME.match(name)
        assert m and m["target"] == "f.bin" and int(m["pid"]) == os.getpid()


def test_save_pretrained_goes_through_the_atomic_writer(tmp_path, monkeypatch):
    import smollm2.weights
    written = []
    real = smollm2.weights.atomic_write
    monkeypatch.setattr(smollm2.weights, "atomic_write", lambda p, c: written.append(p.name) or real(p, c))
    save_pretrained(LlamaForCausalLM(TINY), tmp_path)
    assert written == ["model.safetensors", "config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


# ---- crafted GGUF metadata (item 9) ----------------------------------------------------------------------------
def crafted_gguf(path, context=64, tokenizer=None, bos=None):
    """A tiny llama GGUF (F32 weights of TINY) whose metadata we choose."""
    c = TINY
    w = gguf.GGUFWriter(str(path), "llama")
    if isinstance(context, list):
        w.add_array("llama.context_length", context)
    else:
        w.add_context_length(context)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    if tokenizer:
        w.add_tokenizer_model("gpt2")
        w.add_token_list([f"<s{i}>" for i in range(2)] + ["\u0100\u0101"]
                         + [chr(0x100 + i) for i in range(c.vocab_size - 3)])
        w.add_token_merges(["\u0100 \u0101"])
    if bos is not None:
        w.add_bos_token_id(bos)
    torch.manual_seed(0)
    for name, t in LlamaForCausalLM(c).state_dict().items():
        if name == "lm_head.weight":
            continue
        if name.startswith("model.layers."):
            parts = name.split(".")
            short = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                     "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                     "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
                     "post_attention_layernorm": "ffn_norm"}[".".join(parts[3:-1])]
            gname = f"blk.{parts[2]}.{short}.weight"
        else:
            gname = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[name]
        w.add_tensor(gname, t.float().numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_crafted_gguf_loads_when_sane(tmp_path):
    model = from_pretrained(crafted_gguf(tmp_path / "ok.gguf"))
    assert model.config.max_position_embeddings == 64 and model.config.vocab_size == 96


def test_gguf_huge_context_length_is_refused_before_allocating(tmp_path):
    path = crafted_gguf(tmp_path / "huge.gguf", context=2**28)           # ~100 KB file, ~16 GiB of RoPE tables
    assert path.stat().st_size < 200_000
    with pytest.raises(ValueError, match=r"llama\.context_length.*max_position_embeddings must be at most "
                                         r"1,048,576, got 268,435,456"):
        from_pretrained(path)


def test_gguf_non_scalar_metadata_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"metadata llama\.context_length must be one int positive, got \[64, 64\]"):
        from_pretrained(crafted_gguf(tmp_path / "array.gguf", context=[64, 64]))


def test_gguf_special_token_out_of_range(tmp_path):
    from smollm2.tokenizer import load_tokenizer
    path = crafted_gguf(tmp_path / "bos.gguf", tokenizer=True, bos=10**6)
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.bos_token_id must be one int in \[0, 95\], got 1000000"):
        load_tokenizer(path, cache_dir=tmp_path / "cache", backend="smollm2")
    with pytest.raises(ValueError, match=r"tokenizer\.ggml\.bos_token_id must be one int in \[0, 95\]"):
        from_pretrained(path)


def test_config_bounds_are_value_errors():
    with pytest.raises(ValueError, match=r"SmolLM2Config\.max_position_embeddings must be at most 1,048,576"):
        SmolLM2Config(max_position_embeddings=2**28)
    with pytest.raises(ValueError, match=r"SmolLM2Config\.rope_theta must be at most"):
        SmolLM2Config(rope_theta=float("inf"))


# ---- sharded safetensors index (item 9) ------------------------------------------------------------------------
@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/abs.safetensors", "sub/x.safetensors", ".."])
def test_safetensors_index_cannot_leave_the_folder(tmp_path, shard):
    d = tmp_path / "model"
    save_pretrained(LlamaForCausalLM(TINY), d)
    (tmp_path / "outside.safetensors").write_bytes((d / "model.safetensors").read_bytes())
    (d / "model.safetensors").rename(d / "model-00001-of-00001.safetensors")
    names = list(LlamaForCausalLM(TINY).state_dict())
    weight_map = {n: "model-00001-of-00001.safetensors" for n in names if n != "lm_head.weight"}
    weight_map["model.norm.weight"] = shard
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"weight_map names the shard .*a shard must be a file name ending in "
                                         r"\.safetensors in the same folder"):
        from_pretrained(d)


def test_safetensors_index_not_a_mapping(tmp_path):
    d = tmp_path / "model"
    save_pretrained(LlamaForCausalLM(TINY), d)
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model.safetensors"]}))
    with pytest.raises(ValueError, match="weight_map must be a non-empty mapping"):
        from_pretrained(d)
