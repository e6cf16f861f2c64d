"""The model's structure, API, cache and error messages."""
import math
import subprocess
import sys

import pytest
import torch

import smollm2
from smollm2 import LlamaForCausalLM, SmolLM2Config, create_model, parameter_counts

from helpers import SMALL


def test_create_model_prints_analysis_and_counts(capsys):
    m = create_model(seed=42)
    out = capsys.readouterr().out
    assert "134,515,008" in out and "162,826,560" in out and "28,311,552" in out
    assert sum(p.numel() for p in m.parameters()) == 134_515_008
    assert m.lm_head.weight is m.model.embed_tokens.weight
    f = parameter_counts(m.config)
    assert (f["embeddings"], f["layer"], f["attention"], f["mlp"], f["norms"], f["final_norm"]) == \
        (28_311_552, 3_540_096, 884_736, 2_654_208, 1_152, 576)


def test_create_model_is_seeded():
    a = create_model(seed=1, config=SmolLM2Config(**SMALL), verbose=False)
    b = create_model(seed=1, config=SmolLM2Config(**SMALL), verbose=False)
    c = create_model(seed=2, config=SmolLM2Config(**SMALL), verbose=False)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_initialisation_follows_pretraining_config():
    torch.manual_seed(0)
    m = LlamaForCausalLM(SmolLM2Config(num_hidden_layers=4))
    std = 0.041666666666666664
    assert m.model.embed_tokens.weight.std().item() == pytest.approx(std, rel=0.01)
    assert m.model.layers[0].self_attn.q_proj.weight.std().item() == pytest.approx(std, rel=0.02)
    assert m.model.layers[0].mlp.down_proj.weight.std().item() == pytest.approx(std / math.sqrt(8), rel=0.02)
    assert torch.equal(m.model.norm.weight, torch.ones(576))


def test_public_api_importable():
    where = {"SmolLM2Config": "model", "LlamaForCausalLM": "model", "create_model": "model", "to_transformers": "model",
             "transformers_config": "model", "RMSNorm": "layers", "LlamaAttention": "attention", "KVCache": "attention"}
    for name, module in where.items():                   # re-exported at the top: the very object of its module
        assert getattr(smollm2, name) is getattr(getattr(smollm2, module), name), name
    names = [n for n, _ in LlamaForCausalLM(SmolLM2Config(**SMALL)).named_parameters()]
    assert names[:3] == ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
                         "model.layers.0.self_attn.k_proj.weight"]
    assert "model.layers.0.mlp.gate_proj.weight" in names and "model.layers.0.input_layernorm.weight" in names
    assert "model.norm.weight" in names


def test_cache_equals_full_forward_step_by_step():
    torch.manual_seed(0)
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 24))
    with torch.no_grad():
        full = m(ids).logits
        cache = m.new_cache(2, 32)
        pieces = [m(ids[:, :10], cache=cache).logits]
        for t in range(10, 20):
            pieces.append(m(ids[:, t:t + 1], cache=cache).logits)
        pieces.append(m(ids[:, 20:], cache=cache).logits)       # a chunk after the cache: explicit mask
    assert cache.length == 24
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-4, atol=1e-4)


def test_logits_to_keep():
    torch.manual_seed(0)
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(m(ids, logits_to_keep=1).logits, m(ids).logits[:, -1:])


def test_bf16_cast_keeps_rope_tables_fp32():
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).to(torch.bfloat16)
    assert m.model.rotary_emb.cos_cached.dtype == torch.float32
    assert m.model.embed_tokens.weight.dtype == torch.bfloat16
    assert m.lm_head.weight is m.model.embed_tokens.weight


@pytest.mark.parametrize("bad,field", [
    (dict(hidden_size=577), "hidden_size"), (dict(num_key_value_heads=4), "num_key_value_heads"),
    (dict(num_hidden_layers=0), "num_hidden_layers"), (dict(vocab_size=-1), "vocab_size"),
    (dict(intermediate_size=1.5), "intermediate_size"), (dict(rms_norm_eps=0), "rms_norm_eps"),
    (dict(rope_theta=-1.0), "rope_theta"), (dict(hidden_act="gelu"), "hidden_act"),
    (dict(hidden_size=90, num_attention_heads=6, num_key_value_heads=2), "head_dim"),
])
def test_bad_config_names_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        SmolLM2Config(**bad)


def test_bad_inputs_are_clear():
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).eval()
    with pytest.raises(ValueError, match="batch dimension"):
        m(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="integer tensor"):
        m(torch.rand(1, 3))
    with pytest.raises(ValueError, match="vocab_size=320"):
        m(torch.tensor([[1, 320]]))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        m(torch.zeros(1, 513, dtype=torch.long))
    with pytest.raises(ValueError, match="attention_mask"):
        m(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 5))
    with pytest.raises(ValueError, match="labels"):
        m(torch.zeros(1, 4, dtype=torch.long), labels=torch.zeros(1, 5, dtype=torch.long))
    cache = m.new_cache(1, 8)
    m(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="KV cache"):
        m(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="max_len"):
        m.new_cache(1, 10_000)


def test_cli_params_and_help():
    r = subprocess.run([sys.executable, "-m", "smollm2", "params"], capture_output=True, text=True, check=True)
    assert "134,515,008" in r.stdout
    r = subprocess.run([sys.executable, "-m", "smollm2", "nonsense"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown command 'nonsense'" in r.stderr


def test_four_d_mask_packs_sequences_without_crosstalk():
    """Two sequences in one row, each attending only to itself (block-diagonal causal mask, positions restarting
    at 0): the same hidden states as two separate forwards."""
    torch.manual_seed(0)
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).eval()
    a, b = torch.randint(0, SMALL["vocab_size"], (5,)), torch.randint(0, SMALL["vocab_size"], (4,))
    seg = torch.tensor([0] * 5 + [1] * 4)
    pos = torch.cat([torch.arange(5), torch.arange(4)])
    mask = (seg[None] == seg[:, None]) & (pos[None] <= pos[:, None])             # (9, 9) query x key
    with torch.no_grad():
        packed = m.model(torch.cat([a, b])[None], mask[None, None], pos[None])[0]  # (9, hidden)
        alone = torch.cat([m.model(a[None])[0], m.model(b[None])[0]])
        twice = m.model(torch.cat([a, b]).expand(2, -1), mask[None, None], pos[None])   # a (1, ...) mask broadcasts
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(twice[1], alone, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"4-D attention_mask must be boolean of shape \(1 or 1, 1, 9, 9\)"):
        m.model(torch.cat([a, b])[None], mask[None, None].float(), pos[None])
    with pytest.raises(ValueError, match=r"4-D attention_mask .* got torch.bool \(1, 1, 8, 9\)"):
        m.model(torch.cat([a, b])[None], mask[None, None, 1:], pos[None])


@torch.inference_mode()
def test_cache_rolls_back_and_keeps_rows():
    """`rollback` forgets positions (speculative decoding) and `keep_rows` drops rows and leading columns
    (continuous batching): both leave a cache that continues exactly as a cache that never held the rest."""
    m = LlamaForCausalLM(SmolLM2Config(**SMALL)).eval()
    ids = torch.randint(0, SMALL["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(0))
    cache = m.new_cache(3, 16)
    m(ids, cache=cache)
    cache.rollback(6)                                          # as if only the first 6 tokens had gone in
    again = m(ids[:, 6:8], cache=cache).logits
    fresh = m.new_cache(3, 16)
    m(ids[:, :6], cache=fresh)
    assert torch.allclose(again, m(ids[:, 6:8], cache=fresh).logits, atol=1e-5)
    with pytest.raises(ValueError, match="length: expected 0..8"):
        cache.rollback(9)
    cache.keep_rows(torch.tensor([2, 0]))                      # rows 2 and 0, every column
    assert cache.length == 8 and cache.layers[0].k.shape[0] == 2
    alone = m.new_cache(1, 16)
    m(ids[2:3, :8], cache=alone)
    assert torch.allclose(m(ids[[2, 0], 8:9], cache=cache).logits[0], m(ids[2:3, 8:9], cache=alone).logits[0],
                          atol=1e-5)
