"""``HFCausalLMPolicy``: any local Hugging Face causal LM as a speech policy.

Speech LLMs (Step-Audio 2, CosyVoice-style codecs, Kimi-Audio) emit audio as tokens from a
reserved id range that a codec decoder turns into waveforms. The adapter therefore splits
generated ids into text and audio ids: ``is_audio_token`` says which is which and
``audio_decoder`` turns the audio ids into a waveform. A text-only model gets a voice through
eSpeak NG (``speak_text=True``) so every rollout has audio to rate.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from earmark.domain.messages import content_text
from pipelines.policy.base import Conversation, GeneratedSample, Message, SamplingParams
from pipelines.policy.sampling import response_logprobs, row_seed, sample_batch


class AudioTokenDecoder(Protocol):
    """Turns a response's audio-token ids (in generation order, raw vocabulary ids) into audio."""

    def __call__(self, token_ids: list[int]) -> tuple[np.ndarray, int]: ...


@dataclass(frozen=True)
class AudioTokenRange:
    """Audio tokens occupy vocabulary ids ``start <= id < stop`` (the usual codec layout)."""

    start: int
    stop: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.stop:
            raise ValueError(f"AudioTokenRange needs 0 <= start < stop, got start={self.start} stop={self.stop}")

    def __call__(self, token_id: int) -> bool:
        return self.start <= token_id < self.stop


def _plain_prompt(messages: list[Message]) -> str:
    # Fallback for base models without a chat template: a transcript ending in "Assistant:".
    lines = [f"{m.get('role', 'user').capitalize()}: {content_text(m.get('content'))}" for m in messages]
    return "\n".join(lines) + "\nAssistant:"


class HFCausalLMPolicy:
    """A local causal LM folder (``AutoModelForCausalLM`` + ``AutoTokenizer``, no downloads)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        version: str = "v0",
        audio_decoder: AudioTokenDecoder | None = None,
        is_audio_token: Callable[[int], bool] | None = None,
        speak_text: bool = True,
        voice: str = "en-us",
        extra_stop_ids: list[int] | None = None,
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ) -> None:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = Path(path)
        adapter = self.path / "adapter_config.json"
        if adapter.is_file() and not (self.path / "config.json").is_file():
            import json

            base_dir = Path(json.loads(adapter.read_text())["base_model_name_or_path"])  # a LoRA policy version
        else:
            base_dir = self.path
        if not (base_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{self.path} is not a Hugging Face model folder (no config.json); pass a local "
                "checkpoint path: this adapter never downloads weights"
            )
        if audio_decoder is not None and is_audio_token is None:
            raise ValueError(
                "audio_decoder needs is_audio_token (e.g. AudioTokenRange(start, stop)) to know which ids are audio"
            )
        self.name = name or self.path.name
        self.version = version
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.path, local_files_only=True, trust_remote_code=trust_remote_code
        )
        # transformers < 4.56 calls the argument torch_dtype.
        dtype_kw = (
            "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"
        )
        self.model = AutoModelForCausalLM.from_pretrained(
            base_dir, local_files_only=True, trust_remote_code=trust_remote_code, **{dtype_kw: getattr(torch, dtype)}
        ).eval()
        if base_dir != self.path:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(self.path)).eval()
        self.audio_decoder = audio_decoder
        self.is_audio_token = is_audio_token or (lambda _i: False)
        self.speak_text = speak_text
        self.voice = voice
        self._stop_ids = self._collect_stop_ids(extra_stop_ids or [])
        pad = self.tokenizer.pad_token_id
        self._pad_id = int(pad if pad is not None else (min(self._stop_ids) if self._stop_ids else 0))

    def _collect_stop_ids(self, extra: list[int]) -> set[int]:
        ids: set[int] = set(extra)
        for src in (self.tokenizer.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            if isinstance(src, int):
                ids.add(src)
            elif src:
                ids.update(int(i) for i in src)
        return ids

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """Prompt through the tokenizer's chat template when it has one, else a plain transcript."""
        if not conversation:
            raise ValueError("empty conversation: pass at least one user message")
        messages = [{"role": m.get("role", "user"), "content": content_text(m.get("content"))} for m in conversation]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer(_plain_prompt(messages))["input_ids"])

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, num_samples: int = 1, seed: int = 0
    ) -> list[list[GeneratedSample]]:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not conversations:
            return []
        t0 = time.perf_counter()
        prompts = [self.prompt_ids(c) for c in conversations]
        rows = [(ci, j) for ci in range(len(conversations)) for j in range(num_samples)]
        seeds = [row_seed(seed, j) for _, j in rows]
        first_token: dict[int, float] = {}

        def on_token(r: int, _tok: int) -> None:
            first_token.setdefault(r, time.perf_counter() - t0)

        results = sample_batch(
            self.model, [prompts[ci] for ci, _ in rows], params, seeds, self._stop_ids, self._pad_id, on_token=on_token
        )
        out: list[list[GeneratedSample]] = [[] for _ in conversations]
        for r, ((ci, _j), res) in enumerate(zip(rows, results)):
            out[ci].append(
                self._finish(
                    res.token_ids, res.finish_reason, t0, first_token.get(r), seeds[r], len(prompts[ci]), params
                )
            )
        return out

    def logprobs(self, conversations: list[Conversation], responses: list[list[int]]) -> list[list[float]]:
        return response_logprobs(self.model, [self.prompt_ids(c) for c in conversations], responses, self._pad_id)

    def _finish(
        self,
        ids: list[int],
        finish_reason: str,
        t0: float,
        first_token_s: float | None,
        seed: int,
        prompt_tokens: int,
        params: SamplingParams,
    ) -> GeneratedSample:
        audio_ids = [i for i in ids if self.is_audio_token(i)]
        text_ids = [i for i in ids if not self.is_audio_token(i) and i not in self._stop_ids]
        text = " ".join(self.tokenizer.decode(text_ids, skip_special_tokens=True).split())
        audio: np.ndarray | None = None
        sr: int | None = None
        source = "none"
        if audio_ids and self.audio_decoder is not None:
            audio, sr = self.audio_decoder(audio_ids)
            audio, source = np.asarray(audio, dtype=np.float32).reshape(-1), "audio_tokens"
        elif text and self.speak_text:
            from pipelines.speech.espeak import render_text

            audio, sr = render_text(text, voice=self.voice)
            source = "espeak"
        now = time.perf_counter() - t0
        # Non-streaming: audio exists once the whole response is decoded. Text-only samples report
        # time to first token, as base.GeneratedSample documents.
        ttfa = now if audio is not None else first_token_s
        return GeneratedSample(
            text=text,
            messages=[{"role": "assistant", "content": text}],
            token_ids=list(ids),
            audio=audio,
            sample_rate=sr,
            ttfa_s=ttfa,
            total_s=now,
            extra={
                "finish_reason": finish_reason,
                "audio_source": source,
                "audio_tokens": len(audio_ids),
                "prompt_tokens": prompt_tokens,
                "row_seed": seed,
                "policy": f"{self.name}@{self.version}",
                "sampling": params.as_dict(),
            },
        )
