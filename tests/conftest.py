"""Fixtures shared by the test modules. The real weights are loaded once per session, not once per module."""
import pytest
import torch

from helpers import load_hf_from_gguf, real_gguf_path


@pytest.fixture(scope="session")
def real_ours():
    """Our LlamaForCausalLM from the offline SmolLM2-135M-Instruct GGUF (dequantised to fp32). Tests must not
    modify it (quantise or fine-tune a copy)."""
    from smollm2.weights import from_pretrained

    return from_pretrained("smollm2-135m-instruct").eval()


@pytest.fixture(scope="session")
def real_hf():
    """transformers' LlamaForCausalLM from the same GGUF file: the reference."""
    return load_hf_from_gguf(real_gguf_path())


@pytest.fixture(scope="session")
def real_tok():
    """Our tokenizer built from the GGUF's metadata."""
    from smollm2.tokenizer import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")
