"""Exactness: our logits and loss equal transformers' LlamaForCausalLM with the same config and weights."""
import pytest
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config, to_transformers

from helpers import SMALL, twins

TOL = 1e-5


@pytest.fixture(scope="module")
def full_twins():
    return twins(SmolLM2Config(), seed=42)            # the real SmolLM2-135M shape, random weights


@pytest.mark.parametrize("batch,seq", [(1, 1), (1, 2), (2, 7), (1, 64), (3, 33), (1, 256)])
def test_full_shape_logits_and_loss(full_twins, batch, seq):
    ours, theirs = full_twins
    ids = torch.randint(0, 49152, (batch, seq), generator=torch.Generator().manual_seed(seq))
    with torch.no_grad():
        a, b = ours(ids, labels=ids), theirs(ids, labels=ids)
    assert (a.logits - b.logits).abs().max().item() <= TOL
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=1e-6, equal_nan=True)
    assert a.loss.isnan().item() == (seq == 1)            # one token has nothing to predict: NaN, as in transformers


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tied", [True, False])
def test_small_shapes_many_seeds(seed, tied):
    cfg = SmolLM2Config(**SMALL, tie_word_embeddings=tied)
    ours, theirs = twins(cfg, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    for batch, seq in [(1, 1), (2, 5), (4, 31), (2, 128), (1, 256)]:
        ids = torch.randint(0, cfg.vocab_size, (batch, seq), generator=g)
        labels = ids.clone()
        labels[:, : seq // 3] = -100                       # ignored positions, as in transformers
        with torch.no_grad():
            a, b = ours(ids, labels=labels), theirs(ids, labels=labels)
        assert (a.logits - b.logits).abs().max().item() <= TOL, (batch, seq)
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=1e-6, equal_nan=True)
        assert a.loss.isnan().item() == (seq == 1), (batch, seq)   # NaN only when nothing is left to predict


def test_rope_theta_and_eps_follow_the_config():
    cfg = SmolLM2Config(**{**SMALL, "rope_theta": 10000.0, "rms_norm_eps": 1e-6})
    ours, theirs = twins(cfg, seed=5)
    ids = torch.randint(0, cfg.vocab_size, (2, 300), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (ours(ids).logits - theirs(ids).logits).abs().max().item() <= TOL


def test_gradients_match():
    cfg = SmolLM2Config(**SMALL)
    ours, theirs = twins(cfg, seed=7)
    ids = torch.randint(0, cfg.vocab_size, (2, 40), generator=torch.Generator().manual_seed(7))
    ours(ids, labels=ids).loss.backward()
    theirs(ids, labels=ids).loss.backward()
    g_theirs = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, g_theirs[name].grad, rtol=1e-4, atol=1e-6)


def test_gradients_match_with_ignored_positions():
    """The fused loss drops ignored rows before the head: the gradients still equal transformers' (zero for
    the hidden states of ignored positions), as in chat fine-tuning where the prompt is -100."""
    cfg = SmolLM2Config(**SMALL)
    ours, theirs = twins(cfg, seed=8)
    ids = torch.randint(0, cfg.vocab_size, (3, 40), generator=torch.Generator().manual_seed(8))
    labels = ids.clone()
    labels[0, :30], labels[1, 5:38], labels[2, :] = -100, -100, -100     # a row with nothing counted at all
    ours(ids, labels=labels).loss.backward()
    theirs(ids, labels=labels).loss.backward()
    g_theirs = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, g_theirs[name].grad, rtol=1e-4, atol=1e-6)


def test_left_padding_matches_transformers():
    cfg = SmolLM2Config(**SMALL)
    ours, theirs = twins(cfg, seed=3)
    ids = torch.randint(3, cfg.vocab_size, (3, 12), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, :5] = 0
    mask[2, :11] = 0
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = theirs(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (a[real] - b[real]).abs().max().item() <= TOL
    assert torch.isfinite(a).all()


@pytest.mark.parametrize("tied", [True, False])
def test_fused_training_loss_matches_transformers(tied):
    """return_logits=False: the chunked fused loss gives transformers' loss and gradients."""
    cfg = SmolLM2Config(**SMALL, tie_word_embeddings=tied)
    ours, theirs = twins(cfg, seed=11)
    ids = torch.randint(0, cfg.vocab_size, (3, 400), generator=torch.Generator().manual_seed(11))  # 1197 rows: 3 chunks
    labels = ids.clone()
    labels[0, :50] = -100
    a = ours(ids, labels=labels, return_logits=False)
    b = theirs(ids, labels=labels)
    assert a.logits is None
    torch.testing.assert_close(a.loss, b.loss, rtol=1e-6, atol=1e-6)
    a.loss.backward()
    b.loss.backward()
    g_theirs = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, g_theirs[name].grad, rtol=1e-4, atol=1e-6)


def test_to_transformers_copies_weights_device_dtype_and_mode():
    """The one builder of the transformers twin: a strict copy of every weight, the tie kept or not, our dtype,
    device and train/eval mode, and a clear error for anything that is not our model."""
    torch.manual_seed(1)
    ours = LlamaForCausalLM(SmolLM2Config(**SMALL, tie_word_embeddings=False)).to(torch.bfloat16).train()
    theirs = to_transformers(ours)
    assert theirs.training and theirs.dtype == torch.bfloat16 and theirs.device == torch.device("cpu")
    assert theirs.config._attn_implementation == "sdpa"
    mine, copied = ours.state_dict(), theirs.state_dict()
    assert list(copied) == list(mine)
    for name, value in mine.items():                     # equal values in separate storage: a copy, not a view
        assert torch.equal(copied[name], value) and copied[name].data_ptr() != value.data_ptr(), name
    assert theirs.lm_head.weight.data_ptr() != theirs.model.embed_tokens.weight.data_ptr()   # untied stays untied
    tied = to_transformers(LlamaForCausalLM(SmolLM2Config(**SMALL)).eval(), attn_implementation="eager")
    assert not tied.training and tied.config._attn_implementation == "eager"
    assert tied.lm_head.weight.data_ptr() == tied.model.embed_tokens.weight.data_ptr()        # tied stays tied
    with pytest.raises(ValueError, match=r"model: expected a smollm2 LlamaForCausalLM, got LlamaForCausalLM"):
        to_transformers(theirs)                           # transformers' own class is not ours
