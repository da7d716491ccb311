"""The one policy interface every adapter implements.

Conversations use the chat form of earmark.domain.messages: a list of ``{"role": ..., "content": str | [parts]}``
dicts, optionally starting with a system message that carries the persona card.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

Message = dict[str, Any]
Conversation = list[Message]


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings; recorded verbatim on every rollout row."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 48
    repetition_penalty: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_new_tokens": self.max_new_tokens,
            "repetition_penalty": self.repetition_penalty,
        }


@dataclass
class GeneratedSample:
    """One sampled response to one conversation."""

    text: str  # plain transcript of what the policy said (control tokens stripped)
    messages: list[Message]  # the assistant message(s) appended, in the chat form
    token_ids: list[int]  # every generated id (text, prosody-control and audio tokens)
    audio: np.ndarray | None = None  # mono float32 in [-1, 1]
    sample_rate: int | None = None
    ttfa_s: float | None = None  # time to first audio (or first token for text-only)
    total_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # adapter-specific (e.g. prosody plan)


@runtime_checkable
class Policy(Protocol):
    """A speech policy that can sample responses and score given responses."""

    name: str
    version: str

    def generate(
        self,
        conversations: list[Conversation],
        params: SamplingParams,
        num_samples: int = 1,
        seed: int = 0,
    ) -> list[list[GeneratedSample]]:
        """Return ``num_samples`` samples per conversation, deterministic for a given seed."""
        ...

    def logprobs(self, conversations: list[Conversation], responses: list[list[int]]) -> list[list[float]]:
        """Per-token log-probabilities of ``responses[i]`` (token ids) given ``conversations[i]``."""
        ...
