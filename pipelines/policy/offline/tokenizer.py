"""Byte-level BPE for the offline policy, trained locally on the bundled corpus in milliseconds.

Chat role and prosody-control tokens are special tokens with fixed ids (0..N-1, in the order of
``markup.SPECIAL_TOKENS``) so the policy can find them without string matching, and byte-level
fallback means any user text (held-out prompts, other languages) still tokenizes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pipelines.policy.offline.markup import (
    CHAT_TEMPLATE,
    CONTROL_TOKENS,
    END,
    PAD,
    SPECIAL_TOKENS,
)

DEFAULT_VOCAB_SIZE = 2048
MODEL_MAX_LENGTH = 512
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))


def _text_pieces(texts: Iterable[str]) -> Iterable[str]:
    # The BPE trainer would otherwise learn merges across special-token strings.
    for text in texts:
        for piece in _SPECIAL_RE.split(text):
            if piece:
                yield piece


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE):
    """Train a byte-level BPE on ``texts`` and wrap it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_text_pieces(texts), trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise RuntimeError(
                f"special token {t} got id {tok.token_to_id(t)}, expected {i}; tokenizers changed behaviour"
            )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=END,
        pad_token=PAD,
        additional_special_tokens=[t for t in SPECIAL_TOKENS if t not in (END, PAD)],
        model_max_length=MODEL_MAX_LENGTH,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def control_token_ids(tokenizer) -> dict[str, int]:
    """Ids of the prosody-control tokens in ``tokenizer``; raises if one is missing."""
    ids = {}
    for t in CONTROL_TOKENS:
        i = tokenizer.convert_tokens_to_ids(t)
        if i is None or i == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no prosody token {t}; it is not an offline speech policy tokenizer")
        ids[t] = int(i)
    return ids
