"""Scorer interface and registry shared by every reward model.

A scorer turns one rollout (``ScoringInput``) into one ``ScoreResult`` per named dimension.
Every score row the platform stores names the scorer and its ``version``; the version hashes
the scorer's config so that two runs with different thresholds, prompts or weights never
share a version string (every score row names the reward model and its version).

This module must stay importable without torch: the store, UI and CLI list scorers cheaply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.domain.messages import message_text

Regime = Literal["asr", "tts", "realtime", "duplex", "reasoning"]
ScorerKind = Literal["acoustic", "verifiable", "generative", "learned"]
REGIMES: tuple[str, ...] = ("asr", "tts", "realtime", "duplex", "reasoning")

# Longest audio a scorer accepts in one item: a guard against a caller passing a whole
# session recording (or int16 bytes reinterpreted) instead of one rollout.
MAX_AUDIO_SECONDS = 600.0


class ScoringInput(BaseModel):
    """One rollout as a scorer sees it (``messages`` in the chat form of earmark.domain.messages)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    rollout_id: str | int | None = Field(None, description="store id of the rollout, if any")
    regime: Regime = Field("realtime", description="task regime; picks composition weights")
    messages: list[dict[str, Any]] = Field(default_factory=list, description="conversation before the response")
    persona: dict[str, Any] | None = Field(None, description="persona card; optional 'prosody' targets")
    reference: dict[str, Any] | None = Field(
        None, description="verifiable reference: {'answer', 'text', 'tool_calls'} (any subset)"
    )
    response_text: str = Field("", description="transcript of the response (control tokens stripped)")
    response_tool_calls: list[dict[str, Any]] = Field(
        default_factory=list, description="tool calls of the response: [{'name', 'arguments'}]"
    )
    timeline: dict[str, Any] | None = Field(
        None, description="duplex: the rollout's timeline (earmark.domain.duplex.Timeline JSON)"
    )
    audio: np.ndarray | None = Field(None, description="response audio, mono float32 in [-1, 1]")
    sample_rate: int | None = Field(None, description="sample rate of ``audio`` in Hz")
    ttfa_s: float | None = Field(None, description="time to first audio of the rollout in seconds (latency scorer)")

    @field_validator("audio", mode="before")
    @classmethod
    def _as_mono_float32(cls, v: Any) -> np.ndarray | None:
        if v is None:
            return None
        a = np.asarray(v)
        if a.ndim == 2 and 1 in a.shape:
            a = a.reshape(-1)
        if a.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {a.shape}; average the channels first")
        if a.dtype == np.int16:  # common when audio comes straight from a WAV/PCM blob
            return a.astype(np.float32) / 32768.0
        return a.astype(np.float32, copy=False)

    @model_validator(mode="after")
    def _audio_needs_rate(self) -> ScoringInput:
        if self.audio is not None:
            if not self.sample_rate or self.sample_rate <= 0:
                raise ValueError("audio given without a positive sample_rate; pass the blob's sample rate in Hz")
            if self.audio.size / self.sample_rate > MAX_AUDIO_SECONDS:
                raise ValueError(
                    f"audio is {self.audio.size / self.sample_rate:.0f} s long (limit {MAX_AUDIO_SECONDS:.0f} s);"
                    " score one rollout at a time"
                )
        return self

    @model_validator(mode="after")
    def _tool_calls_from_timeline(self) -> ScoringInput:
        # A duplex model calls tools on its action channel; the tool-call scorer reads
        # response_tool_calls, so calls found only there are surfaced, in time order.
        if self.timeline and not self.response_tool_calls:
            actions = sorted(self.timeline.get("actions") or [], key=lambda a: a.get("chunk", 0))
            self.response_tool_calls = [dict(c) for a in actions for c in (a.get("tool_calls") or [])]
        return self

    @classmethod
    def from_trusted(cls, **fields: Any) -> ScoringInput:
        """An item from fields its caller built and checked (no audio, no timeline: what the
        validators above concern), without validation: ~2.2 us instead of ~3.5, for the reward
        service's per-item path. ``model_construct`` would be the API for this, but it inspects
        the default factories' signatures on every call (~150 us). Same steps as it otherwise."""
        if fields.get("audio") is not None or fields.get("timeline"):
            return cls(**fields)
        values = {**_TRUSTED_DEFAULTS, "messages": [], "response_tool_calls": [], **fields}
        if len(values) != len(_TRUSTED_DEFAULTS):
            return cls(**fields)  # an unknown field: let validation say which
        item = _new_object(cls)
        _set_attribute(item, "__dict__", values)
        _set_attribute(item, "__pydantic_fields_set__", set(fields))
        _set_attribute(item, "__pydantic_extra__", None)
        _set_attribute(item, "__pydantic_private__", None)
        return item

    @property
    def prosody_targets(self) -> dict[str, float]:
        return dict((self.persona or {}).get("prosody") or {})

    def prompt_text(self) -> str:
        """All text parts of the conversation, in order (for judges and the shortcut audit)."""
        return "\n".join(f"{m.get('role', '?')}: {t}" for m in self.messages if (t := message_text(m)))


_new_object, _set_attribute = object.__new__, object.__setattr__  # from_trusted, bound once
# every field's default (the list fields get fresh lists per item in from_trusted)
_TRUSTED_DEFAULTS: dict[str, Any] = {
    name: (None if f.default_factory is not None else f.default) for name, f in ScoringInput.model_fields.items()
}


class ScoreResult(BaseModel):
    """One score on one dimension. ``score`` is in [0, 1] (higher is better) unless documented."""

    dimension: str
    score: float
    rationale: str = ""
    features: dict[str, Any] = Field(default_factory=dict)


class Scorer:
    """Base class. Subclasses set ``name``, ``kind``, ``dimensions``, ``code_version`` and
    implement ``score_one`` (or ``score_batch`` when batching pays, e.g. judges)."""

    name: ClassVar[str] = "base"
    kind: ClassVar[ScorerKind] = "acoustic"
    dimensions: ClassVar[tuple[str, ...]] = ()
    # Bump when the scoring code changes meaning; config changes are hashed in automatically.
    code_version: ClassVar[str] = "0"
    default_config: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        unknown = set(config) - set(self.default_config)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown config keys {sorted(unknown)};"
                f" valid keys are {sorted(self.default_config)}"
            )
        self.config: dict[str, Any] = {**self.default_config, **config}

    @property
    def version(self) -> str:
        blob = json.dumps(self.config, sort_keys=True, default=str).encode()
        return f"{self.code_version}+{hashlib.sha256(blob).hexdigest()[:10]}"

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        raise NotImplementedError(f"{type(self).__name__} must implement score_one or score_batch")

    def score_batch(self, items: Sequence[ScoringInput]) -> list[list[ScoreResult]]:
        return [self.score_one(it) for it in items]

    def score_values(self, item: ScoringInput) -> dict[str, float]:
        """dimension -> score only, without rationale or features: what a caller that keeps just
        the numbers needs (the reward service, per request). Same numbers as ``score_one``; a
        scorer with a cheaper path for that overrides it."""
        return {r.dimension: float(r.score) for r in self.score_one(item)}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "dimensions": list(self.dimensions),
            "version": self.version,
            "config": self.config,
        }


_REGISTRY: dict[str, type[Scorer]] = {}
# Modules that register scorers on import; loaded lazily so listing never imports torch
# unless a torch-backed scorer is actually built.
_BUILTIN_MODULES = (
    "reward_models.prosody",
    "reward_models.verifiable",
    "reward_models.judge",
    "reward_models.bradley_terry",
    "reward_models.latency",
    "reward_models.duplex",
)

S = TypeVar("S", bound=type[Scorer])


def register(name: str) -> Callable[[S], S]:
    def deco(cls: S) -> S:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"scorer name {name!r} already registered by {existing.__qualname__}; pick another name")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def _load_builtins() -> None:
    import importlib

    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_scorers() -> dict[str, dict[str, Any]]:
    """name -> {kind, dimensions, code_version} for every registered scorer."""
    _load_builtins()
    return {
        n: {"kind": c.kind, "dimensions": list(c.dimensions), "code_version": c.code_version}
        for n, c in sorted(_REGISTRY.items())
    }


def build_scorer(name: str, **config: Any) -> Scorer:
    if name not in _REGISTRY:
        _load_builtins()
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown scorer {name!r}; registered: {sorted(_REGISTRY)}") from None
    return cls(**config)


def clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))
