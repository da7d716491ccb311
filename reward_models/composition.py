"""Per-regime reward composition with the verifiable and preference parts kept apart.

Step-Audio-R1.5 style "verifiable reward trap": a policy trained on a single blended number can
raise correctness while naturalness falls, and the blend hides it. So every composed reward
carries ``verifiable`` (WER/CER, answer match, tool calls, turn-taking accuracy) and
``preference`` (human labels, judge scores, prosody match) separately, plus the weighted
``total`` used for training; store all three, never only the total.

Importable without torch (the CLI and UI read weights from here).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import cast

from pydantic import BaseModel, Field, field_validator, model_validator

from reward_models.base import REGIMES, Regime, ScoreResult


class RegimeWeights(BaseModel):
    """Weights of one regime. Component values are weighted means over the dimensions present;
    total = mix * verifiable + (1 - mix) * preference (the present component alone if one is absent)."""

    verifiable: dict[str, float] = Field(default_factory=dict, description="dimension -> weight, verifiable part")
    preference: dict[str, float] = Field(default_factory=dict, description="dimension -> weight, preference part")
    mix: float = Field(0.5, ge=0.0, le=1.0, description="share of the verifiable part in the total")

    @field_validator("verifiable", "preference")
    @classmethod
    def _non_negative(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if w < 0}
        if bad:
            raise ValueError(f"weights must be >= 0, got {bad}; drop a dimension instead of a negative weight")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> RegimeWeights:
        both = set(self.verifiable) & set(self.preference)
        if both:
            raise ValueError(f"dimensions {sorted(both)} are in both parts; each belongs to one part")
        return self


def _default_regimes() -> dict[Regime, RegimeWeights]:
    # The weights are part of each regime's preset (earmark.regimes, pure data, no torch): one copy,
    # read by the CLI, scoring, PPO and the reward server alike. Validated here as RegimeWeights.
    from earmark.regimes import PRESETS

    return {cast(Regime, name): RegimeWeights.model_validate(p.composition.model_dump()) for name, p in PRESETS.items()}


class ComposedReward(BaseModel):
    regime: Regime
    verifiable: float | None = Field(description="weighted mean of verifiable dimensions present, or None")
    preference: float | None = Field(description="weighted mean of preference dimensions present, or None")
    total: float
    parts: dict[str, dict[str, float | str]] = Field(
        default_factory=dict, description="dimension -> {component, weight, value}"
    )
    missing: list[str] = Field(default_factory=list, description="weighted dimensions with no score")
    composition_version: str = ""


class RewardComposition(BaseModel):
    """Named weights per regime; ``compose`` turns per-dimension scores into a ComposedReward."""

    name: str = "default"
    regimes: dict[Regime, RegimeWeights] = Field(default_factory=_default_regimes)

    @model_validator(mode="after")
    def _all_regimes(self) -> RewardComposition:
        missing = set(REGIMES) - set(self.regimes)
        if missing:
            raise ValueError(f"composition {self.name!r} lacks weights for regimes {sorted(missing)}")
        return self

    @property
    def version(self) -> str:
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return f"{self.name}+{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def compose(self, regime: Regime, scores: Mapping[str, float] | Iterable[ScoreResult]) -> ComposedReward:
        if regime not in self.regimes:
            raise ValueError(f"unknown regime {regime!r}; use one of {list(REGIMES)}")
        by_dim = dict(scores) if isinstance(scores, Mapping) else scores_by_dimension(scores)
        w = self.regimes[regime]
        parts: dict[str, dict[str, float | str]] = {}
        missing: list[str] = []

        def component(name: str, weights: dict[str, float]) -> float | None:
            num = den = 0.0
            for dim, wt in weights.items():
                if wt == 0:
                    continue
                if dim not in by_dim or by_dim[dim] is None:
                    missing.append(dim)
                    continue
                v = float(by_dim[dim])
                parts[dim] = {"component": name, "weight": wt, "value": v}
                num, den = num + wt * v, den + wt
            return num / den if den > 0 else None

        ver = component("verifiable", w.verifiable)
        pref = component("preference", w.preference)
        if ver is None and pref is None:
            raise ValueError(
                f"no score for any weighted dimension of regime {regime!r} (have {sorted(by_dim)});"
                f" expected some of {sorted(set(w.verifiable) | set(w.preference))}"
            )
        if ver is None:
            total = pref
        elif pref is None:
            total = ver
        else:
            total = w.mix * ver + (1 - w.mix) * pref
        return ComposedReward(
            regime=regime,
            verifiable=ver,
            preference=pref,
            total=float(total),  # type: ignore[arg-type]
            parts=parts,
            missing=sorted(missing),
            composition_version=self.version,
        )


def scores_by_dimension(results: Iterable[ScoreResult]) -> dict[str, float]:
    """Mean score per dimension (several scorers may score one dimension, e.g. two judges)."""
    acc: dict[str, list[float]] = {}
    for r in results:
        acc.setdefault(r.dimension, []).append(float(r.score))
    return {k: sum(v) / len(v) for k, v in acc.items()}
