"""Fixtures shared by the test modules. The real weights are loaded once per session, not once per module."""
import functools

import numpy as np
import pytest
import torch

from helpers import real_gguf_path


@pytest.fixture(scope="session")
def real_ours():
    """Our LlamaForCausalLM from the offline SmolLM2-135M-Instruct GGUF (dequantised to fp32). Tests must not
    modify it (quantise or fine-tune a copy)."""
    from smollm2.weights import from_pretrained

    return from_pretrained("smollm2-135m-instruct").eval()


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


@pytest.fixture(scope="session")
def real_hf():
    """transformers' LlamaForCausalLM from the same GGUF file: the reference."""
    return load_hf_from_gguf(real_gguf_path())


@pytest.fixture(scope="session")
def real_tok():
    """Our tokenizer built from the GGUF's metadata."""
    from smollm2.tokenizer import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")
