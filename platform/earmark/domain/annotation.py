"""What raters send, per protocol, and how it maps to a canonical preference.

Raters see stimuli in a randomized presentation order; ``presentation["order"]`` lists the
comparison's rollout positions in the order shown. Everything stored is canonical: preference > 0
always means the comparison's first rollout (A) is better, whatever the rater saw.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.domain.enums import Protocol
from earmark.domain.limits import Limits

RATING_DIMENSIONS = ("prosody", "persona_consistency", "correctness")
PAIRWISE_CHOICES = ("A", "B", "tie", "both_bad")
TIMELINE_EVENTS = ("bad_interruption", "missed_backchannel", "late_response", "wrong_tool_call", "other")
MUSHRA_HIDDEN_REF_MIN = 90  # a MUSHRA assessor should rate the hidden reference at least this high
MUSHRA_ANCHOR_LOWPASS_HZ = 3500.0  # ITU-R BS.1534-3 low anchor: the reference low-pass filtered at 3.5 kHz
# Roles of stimuli planted beside a comparison's rollouts (``comparisons.reason["planted"]``).
PLANTED_ROLES = ("hidden_reference", "anchor_low")


def planted_of(reason: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Stimuli planted in a comparison besides its rollouts (MUSHRA hidden reference, anchors).

    Canonical stimulus index ``len(rollout_ids) + j`` is ``planted[j]``; presentation orders,
    stored MUSHRA scores and ``reason["hidden_reference"]`` all use that one index space."""
    planted = (reason or {}).get("planted")
    return list(planted) if isinstance(planted, list) else []


class TimelineEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["bad_interruption", "missed_backchannel", "late_response", "wrong_tool_call", "other"]
    onset_s: float = Field(ge=0, le=Limits.MAX_AUDIO_SECONDS)
    note: str = Field(default="", max_length=500)

    @field_validator("onset_s")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("onset_s must be a finite number of seconds")
        return v


class JudgmentSubmit(BaseModel):
    """One rater's answer to one task, in presentation order (as the form showed it)."""

    model_config = ConfigDict(extra="forbid")
    choice: Literal["A", "B", "tie", "both_bad"] | None = Field(default=None, description="pairwise")
    strength: int | None = Field(default=None, ge=1, le=3, description="pairwise: 1 slight, 2 clear, 3 strong")
    cmos: int | None = Field(default=None, ge=-3, le=3, description="CMOS: B relative to A as shown")
    mos: list[int] | None = Field(default=None, description="MOS 1-5 per stimulus as shown")
    mushra: list[int] | None = Field(default=None, description="MUSHRA 0-100 per stimulus as shown")
    ratings: dict[str, int] = Field(
        default_factory=dict, description="per-dimension 1-5 (prosody, persona, correctness)"
    )
    rationale: str = Field(default="", max_length=Limits.MAX_RATIONALE_CHARS)
    listen_ms: dict[str, int] = Field(default_factory=dict, description="milliseconds played per stimulus label")
    playback_rate: dict[str, float] = Field(
        default_factory=dict, description="highest playback speed used per stimulus label (1.0 = normal)"
    )
    events: list[TimelineEvent] = Field(default_factory=list, max_length=200)

    @field_validator("ratings")
    @classmethod
    def _ratings(cls, v: dict[str, int]) -> dict[str, int]:
        for k, x in v.items():
            if k not in RATING_DIMENSIONS:
                raise ValueError(f"rating {k!r} is unknown; use {', '.join(RATING_DIMENSIONS)}")
            if not isinstance(x, int) or not 1 <= x <= 5:
                raise ValueError(f"rating {k}={x!r} is out of range; use an integer 1-5")
        return v

    @field_validator("mos")
    @classmethod
    def _mos(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 1 <= x <= 5 for x in v):
            raise ValueError("MOS scores must be integers 1-5 (ITU-T P.800 ACR scale)")
        return v

    @field_validator("mushra")
    @classmethod
    def _mushra(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 0 <= x <= 100 for x in v):
            raise ValueError("MUSHRA scores must be integers 0-100")
        return v

    @field_validator("rationale")
    @classmethod
    def _rationale(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("rationale contains a NUL byte; remove control characters")
        return v.strip()

    @model_validator(mode="after")
    def _listen(self) -> JudgmentSubmit:
        if any(ms < 0 or ms > 3_600_000 for ms in self.listen_ms.values()):
            raise ValueError("listen_ms values must be 0-3,600,000 ms")
        if any(not 0.0 < r <= 16.0 for r in self.playback_rate.values()):
            raise ValueError("playback_rate values must be above 0 and at most 16")
        return self


def validate_for_protocol(sub: JudgmentSubmit, protocol: Protocol, n_stimuli: int, dimensions: list[str]) -> None:
    """Protocol-specific completeness; raises ValueError naming the missing field."""
    if protocol == Protocol.pairwise:
        if sub.choice is None:
            raise ValueError("pick A, B, tie or both bad")
        if sub.choice in ("A", "B") and sub.strength is None:
            raise ValueError("say how strong the preference is (1 slight, 2 clear, 3 strong)")
    elif protocol == Protocol.cmos:
        if sub.cmos is None:
            raise ValueError("give a CMOS score from -3 (A much better) to +3 (B much better)")
    elif protocol == Protocol.mos:
        if sub.mos is None or len(sub.mos) != n_stimuli:
            raise ValueError(f"give a 1-5 score for each of the {n_stimuli} clip(s)")
    elif protocol == Protocol.mushra:
        if sub.mushra is None or len(sub.mushra) != n_stimuli:
            raise ValueError(f"give a 0-100 score for each of the {n_stimuli} clips")
    missing = [d for d in dimensions if d in RATING_DIMENSIONS and d not in sub.ratings]
    if missing:
        raise ValueError(f"rate {', '.join(missing)} on 1-5")


def canonical(sub: JudgmentSubmit, protocol: Protocol, order: list[int]) -> dict[str, Any]:
    """Map a submission in presentation order to canonical (comparison) order.

    Returns preference (+1 = rollout_ids[0] strongly better ... -1), choice in canonical labels,
    and per-stimulus scores re-ordered.
    """

    def unshuffle(values: list[int]) -> list[int]:
        out = [0] * len(values)
        for shown, canon in enumerate(order):
            out[canon] = values[shown]
        return out

    flipped = len(order) >= 2 and order[0] == 1
    if protocol == Protocol.pairwise:
        assert sub.choice is not None
        if sub.choice in ("tie", "both_bad"):
            return {"preference": 0.0, "choice": sub.choice}
        shown_a = sub.choice == "A"
        canon_a = shown_a != flipped
        mag = (sub.strength or 1) / 3.0
        return {"preference": mag if canon_a else -mag, "choice": "A" if canon_a else "B"}
    if protocol == Protocol.cmos:
        assert sub.cmos is not None
        # CMOS is "B relative to A" as shown; canonical preference is "A over B" in comparison order.
        pref = -sub.cmos / 3.0
        if flipped:
            pref = -pref
        choice = "tie" if pref == 0 else ("A" if pref > 0 else "B")
        return {"preference": pref, "choice": choice, "scores": {"cmos_canonical": -pref * 3}}
    if protocol == Protocol.mos:
        assert sub.mos is not None
        return {"preference": None, "choice": None, "scores": {"mos": unshuffle(sub.mos)}}
    if protocol == Protocol.mushra:
        assert sub.mushra is not None
        return {"preference": None, "choice": None, "scores": {"mushra": unshuffle(sub.mushra)}}
    return {"preference": None, "choice": None}


def gold_correct(canon: dict[str, Any], gold_answer: dict[str, Any] | None) -> bool | None:
    """Compare a canonical answer with a gold item's known answer."""
    if not gold_answer:
        return None
    if "choice" in gold_answer:
        return bool(canon.get("choice") == gold_answer["choice"])
    if "mos_max" in gold_answer:  # a trapping clip: "this clip is bad; score it at most N"
        scores = canon.get("scores", {}).get("mos", [])
        return bool(scores) and bool(scores[0] <= gold_answer["mos_max"])
    return None
