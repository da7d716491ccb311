"""A tiny random Qwen2 (2 layers, 64 wide) saved as an ordinary HF folder: the "outside checkpoint"
the HF policy adapter, the LoRA DPO tests and the TRL parity tests run on. One builder, so the
three agree on what a tiny checkpoint is; each test passes only what it changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def tiny_qwen2(vocab_size: int, *, seed: int = 0, **overrides: Any) -> Any:
    """A random ``Qwen2ForCausalLM`` in fp32; ``overrides`` are Qwen2Config fields (eos/pad ids,
    ``tie_word_embeddings``, ``attn_implementation``...). Same seed and overrides, same weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        **{
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 256,
            **overrides,
        }
    )
    return Qwen2ForCausalLM(cfg).float()


def save_tiny_qwen2(path: Path, tokenizer: Any, *, extra_vocab: int = 0, seed: int = 0, **overrides: Any) -> Path:
    """``tiny_qwen2`` over ``tokenizer``'s vocabulary (plus ``extra_vocab`` ids after it, e.g. an
    audio-token range), its eos/pad ids, saved with the tokenizer at ``path``."""
    overrides = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, **overrides}
    tiny_qwen2(len(tokenizer) + extra_vocab, seed=seed, **overrides).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
