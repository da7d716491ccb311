"""Tiny real models built from configs, for tests and benchmarks (nothing is downloaded).

``build_tiny_judge(folder)`` writes a randomly initialised 2-layer Llama and a byte-level BPE
tokenizer trained on the judge prompt, in the same on-disk format as a hub checkpoint, so the
judge's real loading path (AutoTokenizer/AutoModelForCausalLM, local_files_only) is exercised.
Its scores are meaningless; it tests plumbing and measures overhead, not judgment.
"""

from __future__ import annotations

from pathlib import Path

from reward_models.judge import PROMPT_DIR

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_judge(
    folder: str | Path, hidden: int = 64, layers: int = 2, seed: int = 0, chat_template: bool = True
) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    corpus = [p.read_text() for p in PROMPT_DIR.glob("*.txt")] + [
        "The user asked a question and the assistant answered politely. Score 1 2 3 4 5.",
        "mean pitch Hz words/s pauses loudness variation dB duration s persona name style",
    ]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    for d in "12345":  # G-Eval needs each digit as one token
        assert len(fast.encode(d, add_special_tokens=False)) == 1, d
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder
