"""Create-models for the rows engineers send in (files, API, Ray messages)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from earmark.domain.enums import Regime, ScorerKind
from earmark.domain.limits import Limits
from earmark.domain.messages import Message, ToolCall, check_text

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ProsodyTargets(BaseModel):
    model_config = ConfigDict(extra="forbid")
    f0_mean_hz: float | None = Field(default=None, gt=40, lt=600)
    f0_std_hz: float | None = Field(default=None, ge=0, lt=300)
    rate_wps: float | None = Field(default=None, gt=0, lt=10, description="words per second")
    pause_ratio: float | None = Field(default=None, ge=0, le=1)


class PersonaCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS, pattern=NAME_PATTERN)
    display_name: str | None = Field(default=None, max_length=Limits.MAX_NAME_CHARS)
    description: str = Field(default="", max_length=Limits.MAX_TEXT_CHARS)
    style: str = Field(default="", max_length=Limits.MAX_TEXT_CHARS)
    prosody: ProsodyTargets = Field(default_factory=ProsodyTargets)
    voice: dict[str, Any] = Field(default_factory=dict, description="renderer settings, e.g. eSpeak pitch/rate")

    def card(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name"}, exclude_none=True)


class PromptCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    external_id: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS, pattern=NAME_PATTERN)
    regime: Regime
    messages: list[Message] = Field(min_length=1, max_length=Limits.MAX_MESSAGES)
    persona: str | None = Field(default=None, description="name of a registered persona")
    reference: dict[str, Any] | None = Field(
        default=None,
        description="verifiable reference: answer, text, tool_calls; audio_sha256 of a stored "
        "reference recording (TTS) makes MUSHRA campaigns plant a hidden reference and a low anchor",
    )
    tools: list[dict[str, Any]] | None = Field(default=None, description="tool schemas offered to the model")
    split: str = Field(default="train", pattern=r"^(train|heldout|test)$")
    tags: list[str] = Field(default_factory=list, max_length=50)


class RolloutCreate(BaseModel):
    """One sampled response; audio is already in the blob store (sha256) when this is built."""

    model_config = ConfigDict(extra="forbid")
    prompt_id: int
    policy_id: int
    round: int = Field(default=0, ge=0)
    sample_index: int = Field(ge=0, lt=Limits.MAX_SAMPLES_PER_PROMPT)
    messages: list[dict[str, Any]]
    text: str
    token_ids: list[int] = Field(default_factory=list)
    audio_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    duration_s: float | None = Field(default=None, ge=0)
    ttfa_s: float | None = Field(default=None, ge=0)
    total_s: float | None = Field(default=None, ge=0)
    sampling: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    tool_calls: list[ToolCall] | None = None
    timeline: dict[str, Any] | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v, "rollout text")


class ScoreCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rollout_id: int
    reward_model_id: int
    dimension: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    score: float
    rationale: str | None = Field(default=None, max_length=Limits.MAX_RATIONALE_CHARS)
    features: dict[str, Any] | None = None

    @field_validator("score")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"score must be a finite number, got {v}; fix the scorer that produced it")
        return v


class RewardModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS, pattern=NAME_PATTERN)
    version: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS)
    kind: ScorerKind
    dimensions: list[str] = Field(default_factory=list)
    config: dict[str, Any] = Field(default_factory=dict)
