"""The full-duplex timeline: a conversation on a fixed chunk clock.

A duplex session is not a list of turns: user and assistant speak on their own channels at the
same time, and the assistant's decisions (take the turn, back-channel, stop when interrupted,
call a tool) happen at chunk boundaries. The timeline keeps exactly that, compactly:

- ``chunk_ms`` (default 160 ms, the StepAudio / DuplexSLA clock) and ``n_chunks``;
- two audio tracks, ``user`` and ``assistant``: each one session-aligned mono clip (both start at
  t=0 and cover the whole session; silence where the side is quiet) referenced by blob sha256,
  plus its voice activity as half-open chunk spans ``[start, end)`` (a few numbers instead of a
  bit per chunk);
- the action channel, sparse: only chunks where the assistant did something (a turn label
  ``response`` / ``interrupt`` / ``backchannel``, planning text, tool calls);
- labelled ``events``: what the scenario expects at known times (ground truth for turn-taking
  metrics), e.g. "the user stopped at 2.40 s: respond", "the user paused at 1.12 s: keep listening".

Stored as JSONB on the rollout (``rollouts.timeline``, the model's session) and on the prompt's
``reference`` (the scenario with its labelled events); exported and imported as one JSON object
per line. Rater marks (bad interruption, late response, ...) are judgments with onset times
(``earmark.domain.annotation.TimelineEvent``), not part of the timeline.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.domain.limits import Limits
from earmark.domain.messages import ToolCall

DEFAULT_CHUNK_MS = 160
MAX_CHUNKS = int(Limits.MAX_AUDIO_SECONDS * 1000 / 40)  # generous: a 40 ms clock over the longest clip

TurnLabel = Literal["response", "interrupt", "backchannel"]
ScenarioType = Literal["normal", "pause", "interrupt", "backchannel"]
SCENARIO_TYPES: tuple[str, ...] = ("normal", "pause", "interrupt", "backchannel")
# What a good duplex model does at each kind of user event:
#   normal: the user finished a turn -> respond (take the turn quickly)
#   pause: the user paused mid-thought -> wait (keep listening, do not take the turn)
#   interrupt: the user barged in while the assistant spoke -> stop (yield within a few chunks)
#   backchannel: the user said "mm-hm" while the assistant spoke -> continue (do not stop)
Expectation = Literal["respond", "wait", "stop", "continue"]
EXPECTED: dict[str, str] = {"normal": "respond", "pause": "wait", "interrupt": "stop", "backchannel": "continue"}


class Span(BaseModel):
    """Voice activity on one channel: chunks ``start`` (inclusive) to ``end`` (exclusive)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    start: int = Field(ge=0)
    end: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Span:
        if self.end <= self.start:
            raise ValueError(f"span [{self.start}, {self.end}) is empty; end must be greater than start")
        return self


class AudioTrack(BaseModel):
    """One channel: a session-aligned mono clip (blob sha256, or a path / base64 on import) and
    its voice activity spans."""

    model_config = ConfigDict(extra="forbid")
    audio_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    path: str | None = None
    base64: str | None = None
    transcript: str = Field(default="", max_length=Limits.MAX_TEXT_CHARS)
    speech: list[Span] = Field(default_factory=list)

    @field_validator("speech")
    @classmethod
    def _disjoint(cls, v: list[Span]) -> list[Span]:
        for a, b in zip(v, v[1:]):
            if b.start < a.end:
                raise ValueError(
                    f"speech spans must be sorted and not overlap: [{a.start},{a.end}) then "
                    f"[{b.start},{b.end}); merge them"
                )
        return v

    @model_validator(mode="after")
    def _at_most_one_source(self) -> AudioTrack:
        given = [x for x in (self.audio_sha256, self.path, self.base64) if x]
        if len(given) > 1:
            raise ValueError("an audio track takes one of audio_sha256, path or base64, not several")
        return self

    def speaking(self, chunk: int) -> bool:
        return any(s.start <= chunk < s.end for s in self.speech)


class Action(BaseModel):
    """What the assistant did at one chunk boundary (sparse: quiet chunks have no entry)."""

    model_config = ConfigDict(extra="forbid")
    chunk: int = Field(ge=0)
    label: TurnLabel | None = None
    plan: str = Field(default="", max_length=2000, description="planning text ('thinking') at this chunk")
    tool_calls: list[ToolCall] = Field(default_factory=list, max_length=32)


class LabelledEvent(BaseModel):
    """Ground truth of a scenario: at ``onset_s`` the user did ``type``; a good model should ``expect``."""

    model_config = ConfigDict(extra="forbid")
    type: ScenarioType
    onset_s: float = Field(ge=0, le=Limits.MAX_AUDIO_SECONDS)
    expect: Expectation | None = None
    note: str = Field(default="", max_length=500)
    # Optional end of the event's condition: where the user resumes after a pause (the span in
    # which taking the turn is wrong) or where barge-in / backchannel speech ends.
    offset_s: float | None = Field(default=None, ge=0, le=Limits.MAX_AUDIO_SECONDS)

    @field_validator("onset_s", "offset_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("onset_s / offset_s must be a finite number of seconds")
        return v

    @model_validator(mode="after")
    def _default_expectation(self) -> LabelledEvent:
        if self.expect is None:
            object.__setattr__(self, "expect", EXPECTED[self.type])
        if self.offset_s is not None and self.offset_s < self.onset_s:
            raise ValueError(
                f"event {self.type}: offset_s {self.offset_s:.3f} is before onset_s "
                f"{self.onset_s:.3f}; the offset is when the event's condition ends"
            )
        return self


class Timeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    chunk_ms: int = Field(default=DEFAULT_CHUNK_MS, ge=10, le=2000)
    n_chunks: int = Field(ge=1, le=MAX_CHUNKS)
    user: AudioTrack = Field(default_factory=AudioTrack)
    assistant: AudioTrack = Field(default_factory=AudioTrack)
    actions: list[Action] = Field(default_factory=list, max_length=MAX_CHUNKS)
    events: list[LabelledEvent] = Field(default_factory=list, max_length=1000)
    scenario: ScenarioType | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _within_clock(self) -> Timeline:
        for side in ("user", "assistant"):
            for s in getattr(self, side).speech:
                if s.end > self.n_chunks:
                    raise ValueError(
                        f"{side} speech span [{s.start},{s.end}) runs past the timeline's "
                        f"{self.n_chunks} chunks; raise n_chunks or trim the span"
                    )
        for a in self.actions:
            if a.chunk >= self.n_chunks:
                raise ValueError(f"action at chunk {a.chunk} is past the timeline's {self.n_chunks} chunks")
        chunks = [a.chunk for a in self.actions]
        if chunks != sorted(set(chunks)):
            raise ValueError(
                "actions must be sorted by chunk with at most one entry per chunk; merge "
                "tool calls of one chunk into one action"
            )
        end_s = self.duration_s
        for e in self.events:
            if e.onset_s > end_s:
                raise ValueError(f"event {e.type} at {e.onset_s:.2f} s is after the timeline's end ({end_s:.2f} s)")
            if e.offset_s is not None and e.offset_s > end_s + 1e-9:
                raise ValueError(
                    f"event {e.type} ends at {e.offset_s:.2f} s, after the timeline's end "
                    f"({end_s:.2f} s); raise n_chunks or fix offset_s"
                )
        return self

    # -- the clock ---------------------------------------------------------------------------
    @property
    def chunk_s(self) -> float:
        return self.chunk_ms / 1000.0

    @property
    def duration_s(self) -> float:
        return self.n_chunks * self.chunk_s

    def chunk_at(self, seconds: float) -> int:
        """Chunk that contains time ``seconds`` (clamped to the timeline)."""
        return min(self.n_chunks - 1, max(0, int(math.floor(seconds / self.chunk_s + 1e-9))))

    def seconds(self, chunk: int) -> float:
        """Start time of ``chunk`` in seconds."""
        return chunk * self.chunk_s

    def action_at(self, chunk: int) -> Action | None:
        for a in self.actions:
            if a.chunk == chunk:
                return a
        return None

    def tool_calls(self) -> list[ToolCall]:
        """Every tool call on the action channel, in time order."""
        return [c for a in self.actions for c in a.tool_calls]

    # -- storage -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Compact JSON (what JSONB columns and JSONL lines hold); ``Timeline.model_validate`` reads it back."""
        return self.model_dump(mode="json", exclude_defaults=True)


def spans_from_mask(mask: list[bool] | Any) -> list[Span]:
    """Half-open spans of True runs in a per-chunk activity mask."""
    spans: list[Span] = []
    start = None
    for i, on in enumerate(list(mask)):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append(Span(start=start, end=i))
            start = None
    if start is not None:
        spans.append(Span(start=start, end=len(mask)))
    return spans
