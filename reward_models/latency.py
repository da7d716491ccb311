"""Latency scorer: time to first audio (``rollouts.ttfa_s``) as a reward in [0, 1].

Spoken dialogue feels broken when the reply starts late: people leave gaps of roughly 200 ms between
turns, a half-second wait still reads as attentive, and past about two seconds the listener
assumes they were not heard. The mapping is piecewise linear on those anchors:

    score = 1                                   if ttfa_s <= good_s   (default 0.5 s)
    score = (bad_s - ttfa_s) / (bad_s - good_s) if good_s < ttfa_s < bad_s
    score = 0                                   if ttfa_s >= bad_s    (default 2.0 s)

so 0.5 s -> 1.0, 1.25 s -> 0.5, 2.0 s -> 0.0. Linear rather than a sigmoid so that a reviewer can
read the raw seconds back from any score. The raw ``ttfa_s`` is kept in ``features``.

ttfa_s is wall-clock time measured by the rollout worker, so it depends on the hardware that ran the
policy: compare latency scores across policy versions only for rollouts from the same machine kind.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from reward_models.base import Scorer, ScoreResult, ScoringInput, clip01, register


def latency_score(ttfa_s: float, good_s: float = 0.5, bad_s: float = 2.0) -> float:
    """The documented mapping from seconds to [0, 1] (see the module docstring)."""
    if not math.isfinite(ttfa_s) or ttfa_s < 0:
        raise ValueError(f"ttfa_s must be a finite number of seconds >= 0, got {ttfa_s!r}")
    if ttfa_s <= good_s:
        return 1.0
    return clip01((bad_s - ttfa_s) / (bad_s - good_s))


@register("latency")
class LatencyScorer(Scorer):
    """Dimension ``latency``: 1 for a reply that starts within ``good_s``, 0 from ``bad_s`` on."""

    kind = "verifiable"
    dimensions = ("latency",)
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {"good_s": 0.5, "bad_s": 2.0}

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        good, bad = float(self.config["good_s"]), float(self.config["bad_s"])
        if not (0 <= good < bad):
            raise ValueError(f"latency scorer needs 0 <= good_s < bad_s, got good_s={good}, bad_s={bad}")

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        if item.ttfa_s is None:
            raise ValueError(
                f"rollout {item.rollout_id} has no ttfa_s (time to first audio); record it at rollout time "
                "(pipelines.rollouts does) or leave the latency scorer out for imported rollouts"
            )
        good, bad = float(self.config["good_s"]), float(self.config["bad_s"])
        score = latency_score(float(item.ttfa_s), good, bad)
        return [
            ScoreResult(
                dimension="latency",
                score=score,
                rationale=f"first audio after {item.ttfa_s:.3f} s (1 at <= {good} s, 0 at >= {bad} s)",
                features={"ttfa_s": float(item.ttfa_s), "good_s": good, "bad_s": bad},
            )
        ]
