"""smollm2.lora: LoRA from scratch, merge/unmerge, PEFT-format adapters that PEFT loads (and PEFT's that we load).

Tiny random models (helpers.SMALL) and their transformers twins; no real weights."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import SMALL, twins
from smollm2 import LlamaForCausalLM, SmolLM2Config
from smollm2.lora import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, LORA_TARGETS, LoRAConfig, LoRALinear, LoRAMLP,
                          LoRASwiGLUFunction, apply_lora, load_adapter, lora_layers, merge_and_unload, merge_lora,
                          save_adapter, unmerge_lora)
from smollm2.model import LlamaMLP

peft = pytest.importorskip("peft")
CFG = SmolLM2Config(**SMALL)
IDS = torch.randint(0, SMALL["vocab_size"], (2, 19), generator=torch.Generator().manual_seed(1))


def randomise_b(model, seed=3, std=0.05):
    """Give every LoRA B non-zero values, as training would (B = 0 makes any adapter invisible)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data = std * torch.randn(p.shape, generator=g)


def lora_model(seed=0, **kw):
    ours, _ = twins(CFG, seed)
    torch.manual_seed(seed + 10)
    apply_lora(ours, **kw)
    randomise_b(ours)
    return ours


@torch.no_grad()
def logits(model, ids=IDS):
    return model(ids).logits


def test_lora_at_init_equals_the_base_and_freezes_it():
    ours, _ = twins(CFG)
    base = logits(ours)
    apply_lora(ours)
    assert torch.equal(logits(ours), base)                                   # B = 0: exactly the base
    layers = lora_layers(ours)
    assert len(layers) == CFG.num_hidden_layers * len(LORA_TARGETS)
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{ab}.weight" for n in layers for ab in "AB"}
    assert all(torch.count_nonzero(m.lora_B.weight) == 0 for m in layers.values())
    assert all(torch.count_nonzero(m.lora_A.weight) > 0 for m in layers.values())
    d, i, kv = CFG.hidden_size, CFG.intermediate_size, CFG.num_key_value_heads * CFG.head_dim
    per_layer = 8 * (2 * (d + d) + 2 * (d + kv) + 3 * (d + i))
    assert sum(p.numel() for p in ours.parameters() if p.requires_grad) == CFG.num_hidden_layers * per_layer
    assert "model.layers.0.self_attn.q_proj.weight" in ours.state_dict()    # the base keeps its key names


def test_lora_gradients_reach_only_the_adapters():
    ours = lora_model()
    ours.train()
    ours(IDS, labels=IDS).loss.backward()
    grads = {n for n, p in ours.named_parameters() if p.grad is not None}
    assert grads == {n for n, p in ours.named_parameters() if p.requires_grad}
    assert all(p.grad.abs().sum() > 0 for n, p in ours.named_parameters() if "lora_A" in n)


def test_lora_swiglu_backward_is_the_chain_rule():
    g = torch.Generator().manual_seed(5)
    d, i, r = 6, 10, 2
    shapes = [(i, d), (r, d), (i, r), (i, d), (r, d), (i, r), (d, i), (r, i), (d, r)]   # (W, A, B) gate, up, down
    ws = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    for k in (1, 2, 4, 5, 7, 8):
        ws[k].requires_grad_(True)                                            # A and B trained, W frozen
    x = torch.randn(2, 3, d, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *w: LoRASwiGLUFunction.apply(x, 1.5, *w), (x, *ws))


def saved_bytes(model, ids=IDS):
    """Bytes of the distinct non-parameter tensors that autograd keeps for the backward pass of one loss."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, labels=ids).loss
    return loss, sum(kept.values())


def test_lora_mlp_trains_like_the_plain_layers_with_less_memory(monkeypatch):
    lean = lora_model()
    assert all(type(layer.mlp) is LoRAMLP for layer in lean.model.layers)
    plain = lora_model()
    for layer in plain.model.layers:
        layer.mlp.__class__ = LlamaMLP                                        # autograd through the LoRALinears
    lean.train(), plain.train()
    (loss, kept), (ref, ref_kept) = saved_bytes(lean), saved_bytes(plain)
    assert torch.equal(loss, ref)                                             # the same forward, bit for bit
    assert kept < ref_kept - 2 * CFG.num_hidden_layers * IDS.numel() * CFG.intermediate_size * 4 * 0.9
    loss.backward(), ref.backward()
    ref_grads = dict(plain.named_parameters())
    for n, p in lean.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, ref_grads[n].grad, atol=1e-5, rtol=1e-4)
    calls = []
    apply = LoRASwiGLUFunction.apply
    monkeypatch.setattr(LoRASwiGLUFunction, "apply", lambda *a: calls.append(1) or apply(*a))
    lean(IDS, labels=IDS)
    assert len(calls) == CFG.num_hidden_layers
    lean.model.layers[0].mlp.gate_proj.lora_dropout = nn.Dropout(0.1)        # not covered: the plain layers
    with torch.no_grad():
        lean(IDS, labels=IDS)                                                 # inference: the plain layers too
    lean(IDS, labels=IDS)
    assert len(calls) == 2 * CFG.num_hidden_layers - 1


def test_lora_linear_takes_any_leading_shape_like_nn_linear():
    layer = LoRALinear(nn.Linear(6, 5, bias=False), LoRAConfig(r=2, alpha=4))
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(2, 3, 6)
    ref = F.linear(x, layer.weight + layer.delta_weight())                # W + (α/r) B A
    torch.testing.assert_close(layer(x), ref)
    torch.testing.assert_close(layer(x[0, 0]), ref[0, 0])                 # a single vector, as nn.Linear takes


def test_merge_and_unmerge_are_exact_to_float_tolerance():
    ours = lora_model()
    w0 = {n: m.weight.detach().clone() for n, m in lora_layers(ours).items()}
    lora = logits(ours)
    assert (lora - logits(twins(CFG)[0])).abs().max() > 1e-3                  # the adapter changes the output
    merge_lora(ours)
    merge_lora(ours)                                                          # merging twice changes nothing more
    assert all(m.merged for m in lora_layers(ours).values())
    torch.testing.assert_close(logits(ours), lora, atol=1e-5, rtol=0)
    unmerge_lora(ours)
    for n, m in lora_layers(ours).items():
        torch.testing.assert_close(m.weight, w0[n], atol=1e-6, rtol=0)
    torch.testing.assert_close(logits(ours), lora, atol=1e-5, rtol=0)


def test_merge_and_unload_gives_a_plain_model():
    ours = lora_model()
    lora = logits(ours)
    merge_and_unload(ours)
    assert not lora_layers(ours) and type(ours.model.layers[0].mlp.down_proj) is nn.Linear
    assert type(ours.model.layers[0].mlp) is LlamaMLP
    assert not any(".lora_" in k for k in ours.state_dict())
    torch.testing.assert_close(logits(ours), lora, atol=1e-5, rtol=0)
    plain = LlamaForCausalLM(CFG)
    plain.load_state_dict(ours.state_dict())                                  # loads strictly: the base's keys


def test_save_and_load_round_trip(tmp_path):
    ours = lora_model()
    save_adapter(ours, tmp_path / "ad")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == [ADAPTER_CONFIG, ADAPTER_WEIGHTS]
    from safetensors.torch import load_file

    keys = set(load_file(tmp_path / "ad" / ADAPTER_WEIGHTS))
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert len(keys) == 2 * len(lora_layers(ours)) and not any("base_layer" in k or k.endswith("proj.weight")
                                                                 for k in keys)
    config = json.loads((tmp_path / "ad" / ADAPTER_CONFIG).read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert sorted(config["target_modules"]) == sorted(LORA_TARGETS)
    fresh, _ = twins(CFG)                                                     # no LoRA yet: load_adapter adds it
    load_adapter(fresh, tmp_path / "ad")
    assert torch.equal(logits(fresh), logits(ours))


def test_our_adapter_loads_in_peft_with_the_same_logits(tmp_path):
    ours, twin = twins(CFG, seed=4)
    torch.manual_seed(5)
    apply_lora(ours, r=4, alpha=12)
    randomise_b(ours)
    save_adapter(ours, tmp_path / "ours")
    hf = peft.PeftModel.from_pretrained(twin, tmp_path / "ours").eval()
    torch.testing.assert_close(hf(IDS).logits.detach(), logits(ours), atol=1e-5, rtol=0)
    assert (logits(ours) - logits(twins(CFG, seed=4)[0])).abs().max() > 1e-3         # the adapter is not a no-op


def test_a_peft_adapter_loads_in_ours_with_the_same_logits(tmp_path):
    ours, twin = twins(CFG, seed=6)
    torch.manual_seed(7)
    made = peft.get_peft_model(twin, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj",
                                                                                       "down_proj"]))
    randomise_b(made)
    made.save_pretrained(tmp_path / "peft")
    load_adapter(ours, tmp_path / "peft")
    assert len(lora_layers(ours)) == 3 * CFG.num_hidden_layers
    with torch.no_grad():
        torch.testing.assert_close(logits(ours), made(IDS).logits, atol=1e-5, rtol=0)


def test_bad_settings_are_clear_errors():
    ours, _ = twins(CFG)
    with pytest.raises(ValueError, match="r must be a positive integer"):
        apply_lora(ours, r=0)
    with pytest.raises(ValueError, match="dropout must be"):
        apply_lora(ours, dropout=1.5)
    with pytest.raises(ValueError, match=r"match no nn.Linear.*q_proj"):
        apply_lora(ours, targets=("qkv",))
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_lora(ours)
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_adapter(ours, "unused")
    apply_lora(ours)
    with pytest.raises(ValueError, match="already has LoRA layers"):
        apply_lora(ours)


def rewrite(folder, config=None, tensors=None):
    from safetensors.torch import save_file

    if config is not None:
        (folder / ADAPTER_CONFIG).write_text(json.dumps(config))
    if tensors is not None:
        save_file(tensors, folder / ADAPTER_WEIGHTS)


def test_mismatched_adapter_files_are_clear_errors(tmp_path):
    from safetensors.torch import load_file

    ours = lora_model()
    good = save_adapter(ours, tmp_path / "ad")
    config, tensors = json.loads((good / ADAPTER_CONFIG).read_text()), load_file(good / ADAPTER_WEIGHTS)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(twins(CFG)[0], tmp_path / "nowhere")
    cases = [({**config, "r": 4}, None, r"adapter has r=4, alpha=16; the model's LoRA layers have r=8"),
             ({**config, "use_dora": True}, None, "unsupported LoRA settings use_dora=True"),
             ({**config, "peft_type": "IA3"}, None, "not a LoRA adapter config"),
             (None, {k: v for k, v in tensors.items() if "layers.1." not in k}, r"14 missing"),
             (None, {**tensors, "base_model.model.extra.lora_A.weight": torch.zeros(1)}, "1 unexpected"),
             (None, {k: v[:, :2].contiguous() if "layers.0.mlp.up_proj.lora_A" in k else v for k, v in tensors.items()},
              r"up_proj.lora_A.weight has shape \(8, 2\), the model expects \(8, 96\)")]
    for i, (cfg, ten, message) in enumerate(cases):
        folder = tmp_path / f"bad{i}"
        save_adapter(ours, folder)
        rewrite(folder, cfg, ten)
        with pytest.raises(ValueError, match=message):
            load_adapter(lora_model(), folder)
    (tmp_path / "bad0" / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_adapter(lora_model(), tmp_path / "bad0")
    (tmp_path / "bad3" / ADAPTER_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_adapter(lora_model(), tmp_path / "bad3")
    merged = merge_lora(lora_model())
    with pytest.raises(ValueError, match="unmerge_lora"):
        load_adapter(merged, good)
