"""``OfflineSpeechPolicy``: the tiny prosody-token LM, rendered to speech with eSpeak NG.

The model writes English with prosody-control tokens; each sample is parsed into segments
(rate, pitch, emphasis, pauses) and rendered. The first segment is rendered from inside the
sampling loop as soon as it is complete, so ``ttfa_s`` is the latency a streaming deployment
would see, measured rather than estimated.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.policy.base import Conversation, GeneratedSample, SamplingParams
from pipelines.policy.offline.build import MANIFEST, POLICY_NAME, ensure_checkpoint
from pipelines.policy.offline.markup import (
    ASSISTANT,
    CONTROL_TOKENS,
    END,
    PAD,
    SYSTEM,
    USER,
    message_text,
    parse_markup,
    prosody_summary,
    render_chat,
    strip_controls,
)
from pipelines.policy.sampling import response_logprobs, row_seed, sample_batch
from pipelines.speech.espeak import DEFAULT_VOICE, render_segments

_CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")
EMPTY_AUDIO_S = 0.2  # a sample that says nothing still gets a valid (silent) clip


class OfflineSpeechPolicy:
    """The project's offline speech policy; any checkpoint with its tokenizer loads the same way."""

    def __init__(
        self,
        model,
        tokenizer,
        name: str = POLICY_NAME,
        version: str = "v0",
        voice: str = DEFAULT_VOICE,
        path: Path | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.version = version
        self.voice = voice
        self.path = path
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in [*CONTROL_TOKENS, END, PAD, SYSTEM, USER, ASSISTANT]}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(
                f"tokenizer lacks the offline policy's special tokens {missing}; load a checkpoint built by "
                "pipelines.policy.offline (or one fine-tuned from it)"
            )
        self._control_ids = {ids[t] for t in CONTROL_TOKENS}
        self._stop_ids = {ids[END], ids[PAD], ids[SYSTEM], ids[USER], ids[ASSISTANT]}
        self._pad_id = ids[PAD]
        self._max_positions = int(getattr(model.config, "max_position_embeddings", 512))

    # -- loading and saving ------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        version: str | None = None,
        tokenizer_path: str | os.PathLike[str] | None = None,
        voice: str = DEFAULT_VOICE,
    ) -> OfflineSpeechPolicy:
        """Load a checkpoint folder (the built v0, or a later version saved with ``save_pretrained``)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a model folder (no config.json); build one with "
                "`python -m pipelines.policy.offline --out {path}` or pass a saved checkpoint"
            )
        tok_dir = Path(tokenizer_path) if tokenizer_path else path
        if not (tok_dir / "tokenizer.json").is_file() and not (tok_dir / "tokenizer_config.json").is_file():
            raise FileNotFoundError(
                f"no tokenizer in {tok_dir}; save it next to the model (tokenizer.save_pretrained) "
                "or pass tokenizer_path= the v0 checkpoint"
            )
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        manifest = json.loads((path / MANIFEST).read_text()) if (path / MANIFEST).is_file() else {}
        return cls(
            model,
            tokenizer,
            name=name or manifest.get("name", POLICY_NAME),
            version=version or manifest.get("version", path.name),
            voice=voice,
            path=path,
        )

    @classmethod
    def default(cls, path: str | os.PathLike[str] | None = None) -> OfflineSpeechPolicy:
        """The built-in v0 policy, building its checkpoint on first use."""
        return cls.from_pretrained(ensure_checkpoint(path))

    def save(self, path: str | os.PathLike[str], version: str | None = None) -> Path:
        """Write model, tokenizer and manifest so ``from_pretrained(path)`` restores this policy."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        manifest: dict[str, Any] = {}
        if self.path is not None and (self.path / MANIFEST).is_file():
            manifest = json.loads((self.path / MANIFEST).read_text())
        manifest.update({"name": self.name, "version": version or self.version})
        (path / MANIFEST).write_text(json.dumps(manifest, indent=2))
        return path

    # -- prompting ---------------------------------------------------------------------------
    def prompt_ids(self, conversation: Conversation, max_new_tokens: int = 0) -> list[int]:
        """Token ids of the prompt; drops the oldest turns (never the system or last user turn) to fit."""
        if not conversation:
            raise ValueError("empty conversation: pass at least one user message")
        if conversation[-1].get("role") == "assistant":
            raise ValueError("the conversation ends with an assistant turn; append the user turn to answer")
        system = [m for m in conversation[:1] if m.get("role") == "system"]
        turns = conversation[len(system) :]
        budget = self._max_positions - max_new_tokens
        while True:
            ids = self.tokenizer(render_chat(system + turns), add_special_tokens=False)["input_ids"]
            if len(ids) <= budget or len(turns) <= 1:
                return ids[-budget:] if budget > 0 else ids
            turns = turns[1:]

    # -- the Policy protocol -----------------------------------------------------------------
    def generate(
        self, conversations: list[Conversation], params: SamplingParams, num_samples: int = 1, seed: int = 0
    ) -> list[list[GeneratedSample]]:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not conversations:
            return []
        t0 = time.perf_counter()
        prompts = [self.prompt_ids(c, params.max_new_tokens) for c in conversations]
        rows = [(ci, j) for ci in range(len(conversations)) for j in range(num_samples)]
        seeds = [row_seed(seed, j) for _, j in rows]
        first_audio: dict[int, tuple[np.ndarray, float]] = {}  # row -> (first segment audio, ttfa)
        so_far: list[list[int]] = [[] for _ in rows]

        def on_token(r: int, tok: int) -> None:
            # The first segment is final once a second one has begun (its trailing pause can no
            # longer grow) or the row stopped; render it then, like a streaming server would.
            so_far[r].append(tok)
            if r in first_audio:
                return
            segments = parse_markup(self._decode(so_far[r]))
            if len(segments) >= 2 or (tok in self._stop_ids and segments):
                audio, _ = render_segments(segments[:1], voice=self.voice)
                first_audio[r] = (audio, time.perf_counter() - t0)

        results = sample_batch(
            self.model, [prompts[ci] for ci, _ in rows], params, seeds, self._stop_ids, self._pad_id, on_token=on_token
        )
        out: list[list[GeneratedSample]] = [[] for _ in conversations]
        for r, ((ci, _j), res) in enumerate(zip(rows, results)):
            out[ci].append(
                self._finish(
                    res.token_ids,
                    res.finish_reason,
                    first_audio.get(r),
                    t0,
                    seed=seeds[r],
                    prompt_tokens=len(prompts[ci]),
                    params=params,
                )
            )
        return out

    def logprobs(self, conversations: list[Conversation], responses: list[list[int]]) -> list[list[float]]:
        prompts = [self.prompt_ids(c) for c in conversations]
        return response_logprobs(self.model, prompts, responses, self._pad_id)

    # -- helpers -----------------------------------------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        # A byte-level BPE can sample any byte, NUL and other C0 controls included (a policy
        # trained hot does); they are not speech and the store refuses them, so drop them here.
        text = self.tokenizer.decode([i for i in ids if i not in self._stop_ids], skip_special_tokens=False)
        return _CONTROL_CHARS_RE.sub("", text)

    def render(self, markup: str) -> tuple[np.ndarray, int, list]:
        """Speak marked-up text the way the policy would: (audio, sample_rate, segments)."""
        segments = parse_markup(markup)
        audio, sr = render_segments(segments, voice=self.voice)
        return audio, sr, segments

    def _finish(
        self,
        ids: list[int],
        finish_reason: str,
        first: tuple[np.ndarray, float] | None,
        t0: float,
        seed: int,
        prompt_tokens: int,
        params: SamplingParams,
    ) -> GeneratedSample:
        markup = self._decode(ids)
        segments = parse_markup(markup)
        if first is not None:  # the first segment was rendered during sampling; render the rest
            rest, sr = render_segments(segments[1:], voice=self.voice)
            audio, ttfa = np.concatenate([first[0], rest]), first[1]
        else:
            audio, sr = render_segments(segments, voice=self.voice)
            ttfa = time.perf_counter() - t0
        empty = audio.size == 0
        if empty:
            audio = np.zeros(int(sr * EMPTY_AUDIO_S), dtype=np.float32)
        text = strip_controls(markup)
        return GeneratedSample(
            text=text,
            messages=[{"role": "assistant", "content": text, "markup": markup}],
            token_ids=list(ids),
            audio=audio,
            sample_rate=sr,
            ttfa_s=ttfa,
            total_s=time.perf_counter() - t0,
            extra={
                "markup": markup,
                "segments": [s.as_dict() for s in segments],
                "prosody": prosody_summary(markup),
                "finish_reason": finish_reason,
                "prompt_tokens": prompt_tokens,
                "row_seed": seed,
                "empty": empty,
                "policy": f"{self.name}@{self.version}",
                "sampling": params.as_dict(),
            },
        )


def last_user_text(conversation: Conversation) -> str:
    """Text of the final user turn (what the policy answers); handy for logs and tests."""
    for m in reversed(conversation):
        if m.get("role") == "user":
            return message_text(m)
    return ""
