"""Tests for smollm2.quantize (notebook 08): int8 (torch.ao dynamic, SmoothQuant) and int4 (torch's CPU int4
kernel) copies of a model, `quantize(model, kind)` by name, and `--quantize` on the command
line. The real-weights tests use the session fixtures of tests/conftest.py."""
import pytest
import torch

from smollm2.cli import generate_command
from smollm2.quantize import (QUANTIZERS, DynamicInt8Linear, Int4Linear, Int8WeightLinear, PerTokenInt8Linear,
                              dequantize_int4, quantize, quantize_int4, quantize_int8, quantize_weight_int4)

import helpers


def tiny_model(seed: int = 0, **overrides):
    """The tests' small model with a width of 64 (groups of 32 and 64 divide it) and 512 ids."""
    return helpers.tiny_model(seed, **{"vocab_size": 512, "hidden_size": 64, "num_attention_heads": 4, **overrides})


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def real(real_ours, real_tok):
    """(unused slot, ours from the offline GGUF file, our tokenizer): the shape test_generation.py's tests used."""
    return None, real_ours, real_tok


# ---- int8 (moved from notebook 05 / tests/test_generation.py) ----

def test_quantize_int8_follows_fp32_and_leaves_the_original(real):
    from smollm2.quantize import quantize_int8

    _, ours, tok = real
    before = ours.model.layers[0].mlp.gate_proj.weight.clone()
    q = quantize_int8(ours)
    assert torch.equal(ours.model.layers[0].mlp.gate_proj.weight, before)          # original untouched
    assert isinstance(ours.model.layers[0].mlp.gate_proj, torch.nn.Linear)
    assert type(q.model.layers[0].mlp.gate_proj) is PerTokenInt8Linear                # torch.ao's, per-token scales
    assert isinstance(q.model.layers[0].mlp.down_proj, torch.nn.Linear)              # skipped: stays fp32
    ids = torch.tensor([tok.encode("To be, or not to be, that is the question: whether 'tis nobler in the mind")])
    with torch.inference_mode():
        ref = ours(ids).logits[0]
        cache = q.new_cache(1, ids.shape[1])
        got = torch.cat([q(ids[:, t:t + 1], cache=cache).logits[0] for t in range(ids.shape[1])])
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.75
    out = q.generate(tok.encode("The capital of Japan is"), max_new_tokens=6, temperature=0)
    assert "Tokyo" in tok.decode(out.tolist())


def _int8_linear(per_token: bool, bias: bool = False):
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(64, 48, bias=bias))
    return layer, quantize_int8(layer, skip=(), per_token=per_token)


def test_per_token_int8_rounds_each_token_on_its_own_grid():
    """One call over tokens of very different sizes (a 'massive activation' row among ordinary ones): with
    per-token scales every row is as accurate as when it is quantised alone; with one scale per call the
    ordinary rows lose most of their precision."""
    x = torch.randn(6, 64) * torch.tensor([1000.0, 1, 1, 0.5, 2, 1])[:, None]          # (T=6, K)
    layer, per_token = _int8_linear(True)
    _, per_call = _int8_linear(False)
    with torch.no_grad():
        ref = layer(x)
        err = lambda y: ((y - ref).abs().amax(1) / ref.abs().amax(1))                  # (T,) relative, per row
        alone = torch.cat([per_token(x[i:i + 1]) for i in range(6)])
        assert type(per_token[0]) is PerTokenInt8Linear and type(per_call[0]) is DynamicInt8Linear
        assert err(per_token(x)).max() < 0.05 and err(alone).max() < 0.05
        assert torch.allclose(per_token(x), alone, rtol=0, atol=0.05 * ref.abs().max().item())
        assert err(per_call(x))[1:].min() > 3 * err(per_token(x))[1:].max()     # every ordinary row worse


def test_per_token_int8_refuses_a_bias():
    with pytest.raises(ValueError, match="bias.*per_token=False"):
        _int8_linear(True, bias=True)
    _int8_linear(False, bias=True)                                                  # one scale per call: fine


def test_per_token_int8_scores_closer_to_fp32_in_one_pass(real):
    """Scoring reads a whole text in one call: per-token scales keep its logits closer to fp32's."""
    from smollm2.evaluate import compare_logits

    _, ours, tok = real
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 2
    with torch.inference_mode():
        kl = {p: compare_logits(ours, quantize_int8(ours, per_token=p), tok, text)["kl_mean"] for p in (True, False)}
    assert kl[True] < 0.75 * kl[False], kl


@pytest.mark.slow
def test_smoothquant_int8(real):
    from smollm2.data import ensure_shakespeare
    from smollm2.quantize import quantize_int8, smooth_down_proj

    _, ours, tok = real
    calibration = tok.encode(ensure_shakespeare().read_text()[:6000])[:512]
    ids = torch.tensor([tok.encode("The Amazon rainforest covers much of the Amazon basin of South America.")])
    import copy

    smoothed = smooth_down_proj(copy.deepcopy(ours), torch.tensor([calibration]))
    with torch.inference_mode():
        ref = ours(ids).logits[0]
        assert (smoothed(ids).logits[0] - ref).abs().max().item() < 1e-3          # the same function in fp32
    assert not torch.equal(smoothed.model.layers[0].mlp.down_proj.weight, ours.model.layers[0].mlp.down_proj.weight)
    q = quantize_int8(ours, calibration_ids=calibration)
    assert not any(isinstance(m, torch.nn.Linear) for m in q.modules())            # every linear is int8
    with torch.inference_mode():
        cache = q.new_cache(1, ids.shape[1])
        got = torch.cat([q(ids[:, t:t + 1], cache=cache).logits[0] for t in range(ids.shape[1])])
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean().item() >= 0.75


def test_quantize_int8_bad_input(tiny):
    from smollm2.quantize import quantize_int8

    with pytest.raises(ValueError, match="torch.nn.Module"):
        quantize_int8("model")
    with pytest.raises(ValueError, match="float32"):
        quantize_int8(tiny_model().to(torch.bfloat16))
    with pytest.raises(ValueError, match="alpha"):
        quantize_int8(tiny, calibration_ids=[1, 2, 3], alpha=1.5)
    with pytest.raises(ValueError, match="per_token must be True or False, got 'no'"):
        quantize_int8(tiny, per_token="no")


# ---- int4 ----

@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_weight_round_trip(group_size):
    w = torch.randn(48, 256, generator=torch.Generator().manual_seed(group_size))
    q, sz = quantize_weight_int4(w, group_size)
    assert q.dtype == torch.int32 and q.shape == w.shape and int(q.min()) == 0 and int(q.max()) == 15
    assert sz.dtype == torch.bfloat16 and sz.shape == (256 // group_size, 48, 2)
    step = sz[..., 0].float().T.repeat_interleave(group_size, 1)                    # (48, 256)
    err = (dequantize_int4(q, sz, group_size) - w).abs()
    assert (err <= 0.5 * step * 1.02 + 1e-6).all()                                   # half a step (+ bf16 rounding)
    assert err.mean() > 0.05 * step.mean()                                          # a real rounding happened


def test_int4_weight_on_a_grid_is_exact():
    """Weights already on a 16-level grid per group of 32 (what Q4_1 stores) come back up to bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    d = torch.rand(64, 8, 1, generator=g).to(torch.bfloat16).float() / 8 + 1 / 64  # bf16-exact steps
    m = (torch.randn(64, 8, 1, generator=g) / 4).to(torch.bfloat16).float()
    levels = torch.randint(0, 16, (64, 8, 32), generator=g)
    levels[..., 0], levels[..., 1] = 0, 15                                          # the grid's ends are used
    w = (m + d * levels).reshape(64, 256)
    q, sz = quantize_weight_int4(w, 32)
    assert torch.equal(q, levels.reshape(64, 256).int())
    err = (dequantize_int4(q, sz, 32) - w).abs()
    assert err.max() <= 2 ** -8 * (w.abs().max() + 16 * d.max())                   # bf16 rounding of scale and zero
    assert err.mean() < 0.05 * d.mean()                                             # versus ~1/4 step off a grid


def test_int4_linear_equals_x_times_dequantised_weight():
    linear = torch.nn.Linear(128, 96, bias=True)
    lin4 = Int4Linear.from_linear(linear, 32)
    W = dequantize_int4(*quantize_weight_int4(linear.weight.detach(), 32), 32)       # (96, 128)
    x = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(1))
    ref = x.to(torch.bfloat16).float() @ W.T + linear.bias.detach()
    got = lin4(x)
    assert got.shape == (2, 5, 96) and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-2 * ref.abs().max().item())   # bf16 output rounding
    assert lin4.weight_packed.nbytes == 96 * 128 // 2                                # two weights per byte


def test_int8_weight_linear_equals_x_times_dequantised_weight():
    linear = torch.nn.Linear(64, 300, bias=False)
    lin8 = Int8WeightLinear(linear)
    W = lin8.weight_int8.float() * lin8.scales.float()[:, None]
    assert (W - linear.weight).abs().max() <= linear.weight.abs().amax(1).max() / 127
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    ref = x.to(torch.bfloat16).float() @ W.T
    torch.testing.assert_close(lin8(x), ref, rtol=0, atol=1e-2 * ref.abs().max().item())


@pytest.mark.parametrize("head", ["int8", "int4", "fp32"])
def test_quantize_int4_copies_the_model(tiny, head):
    q = quantize_int4(tiny, 32, head=head)
    assert isinstance(tiny.model.layers[0].mlp.down_proj, torch.nn.Linear)           # original untouched
    assert tiny.lm_head.weight is tiny.model.embed_tokens.weight
    kinds = {type(m).__name__ for n, m in q.named_modules() if n.startswith("model.layers.") and n.count(".") == 4}
    assert kinds == {"Int4Linear"}
    assert type(q.lm_head).__name__ == {"int8": "Int8WeightLinear", "int4": "Int4Linear", "fp32": "Linear"}[head]
    assert torch.equal(q.model.embed_tokens.weight, tiny.model.embed_tokens.weight)  # lookup stays exact
    x = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref, got = tiny(x).logits, q(x).logits
    assert (got - ref).abs().max() < 0.25 * ref.abs().max()
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.7
    out = q.generate(x[:1], max_new_tokens=4, temperature=0)                          # the decode path runs
    assert out.shape == (1, 9 + 4)


def test_quantize_int4_skip(tiny):
    q = quantize_int4(tiny, 64, skip=("down_proj",))
    assert isinstance(q.model.layers[1].mlp.down_proj, torch.nn.Linear)
    assert isinstance(q.model.layers[1].mlp.up_proj, Int4Linear) and q.model.layers[1].mlp.up_proj.group_size == 64


def test_quantize_int4_bad_input(tiny):
    small = lambda: helpers.tiny_model(num_hidden_layers=1)           # width 96: groups of 64 do not divide it  # noqa: E731
    with pytest.raises(ValueError, match="expected a model"):
        quantize_int4("model")
    with pytest.raises(ValueError, match="group_size must be one of"):
        quantize_int4(tiny, 48)
    with pytest.raises(ValueError, match="group_size 64 does not divide model.layers.0.self_attn.q_proj's in_features 96"):
        quantize_int4(small(), 64)
    with pytest.raises(ValueError, match="float32"):
        quantize_int4(small().to(torch.bfloat16))
    with pytest.raises(ValueError, match="on the CPU; the model is on meta"):
        quantize_int4(small().to("meta"))
    with pytest.raises(ValueError, match="head must be"):
        quantize_int4(tiny, head="fp16")


def test_quantize_int4_real_weights(real):
    from smollm2.evaluate import compare_logits

    _, ours, tok = real
    q = quantize_int4(ours)                                                          # groups of 32, int8 head
    text = "The Amazon rainforest covers much of the Amazon basin of South America. The majority of the forest"
    with torch.inference_mode():
        r = compare_logits(ours, q, tok, text)
    assert r["kl_mean"] < 0.02 and r["top1_agreement"] >= 0.85, r   # 18 tokens: 0.002, 17/18 (AVX2 kernels) to 18/18
    out = q.generate(tok.encode("The capital of Japan is"), max_new_tokens=6, temperature=0)
    assert "Tokyo" in tok.decode(out.tolist())


# ---- the registry and the command line ----

def test_registry(tiny):
    assert {"int8", "int4"} <= set(QUANTIZERS)
    assert isinstance(quantize(tiny, "int4").model.layers[0].mlp.up_proj, Int4Linear)
    assert isinstance(quantize(tiny, "int4", group_size=64).model.layers[0].mlp.up_proj, Int4Linear)
    with pytest.raises(ValueError, match=r"kind: expected one of \['int4', 'int8'\], got 'foo'"):
        quantize(tiny, "foo")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model = tiny_model(seed=6, vocab_size=49152)
    torch.save({"step": 1, "model": model.state_dict(), "model_config": model.config.to_dict()},
               folder / "checkpoint_step_1.pt")
    return folder


def test_cli_quantize_int4(checkpoint, capsys):
    assert generate_command(["Hello", "--checkpoint", str(checkpoint), "--greedy", "--max-new-tokens", "5",
                             "--quantize", "int4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Hello") and len(out.strip()) > len("Hello")


def test_cli_quantize_unknown_kind_exits_2(checkpoint, capsys):
    with pytest.raises(SystemExit) as e:
        generate_command(["Hello", "--checkpoint", str(checkpoint), "--quantize", "foo"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --quantize: invalid choice: 'foo'" in err and "int4" in err and "int8" in err
