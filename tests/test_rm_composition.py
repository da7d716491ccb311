"""Per-regime reward composition keeps the verifiable and preference parts apart."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reward_models.base import REGIMES, ScoreResult
from reward_models.composition import RegimeWeights, RewardComposition


def test_defaults_cover_every_regime_and_keep_parts_separate() -> None:
    comp = RewardComposition()
    assert set(comp.regimes) == set(REGIMES)
    r = comp.compose(
        "reasoning",
        {
            "normalized_match": 1.0,
            "human_preference": 0.2,
            "naturalness": 0.4,
            "helpfulness": 0.9,
            "tool_call_accuracy": 0.0,
        },
    )
    assert r.verifiable == pytest.approx((1.0 * 1 + 0.0 * 0.5) / 1.5)
    assert r.preference == pytest.approx((0.2 + 0.4 + 0.9 * 0.5) / 2.5)
    assert r.total == pytest.approx(0.5 * r.verifiable + 0.5 * r.preference)
    assert r.parts["naturalness"] == {"component": "preference", "weight": 1.0, "value": 0.4}
    assert r.composition_version.startswith("default+")


def test_missing_dimensions_and_single_component() -> None:
    comp = RewardComposition()
    r = comp.compose("asr", [ScoreResult(dimension="transcript_accuracy", score=0.8)])
    assert r.verifiable == pytest.approx(0.8) and r.preference is None and r.total == pytest.approx(0.8)
    assert r.missing == ["char_accuracy"]
    # two scorers on one dimension are averaged
    r = comp.compose(
        "tts", [ScoreResult(dimension="prosody_match", score=0.2), ScoreResult(dimension="prosody_match", score=0.6)]
    )
    assert r.verifiable is None and r.preference == pytest.approx(0.4) and r.total == pytest.approx(0.4)
    with pytest.raises(ValueError, match="no score for any weighted dimension"):
        comp.compose("duplex", {"unrelated": 1.0})


def test_custom_weights_validate_and_change_version() -> None:
    base = RewardComposition()
    custom = RewardComposition(
        name="default",
        regimes={
            **base.regimes,
            "tts": RegimeWeights(verifiable={"char_accuracy": 1.0}, preference={"prosody_match": 1.0}, mix=0.9),
        },
    )
    assert custom.version != base.version
    assert custom.compose("tts", {"char_accuracy": 1.0, "prosody_match": 0.0}).total == pytest.approx(0.9)
    with pytest.raises(ValidationError, match="both parts"):
        RegimeWeights(verifiable={"x": 1.0}, preference={"x": 1.0})
    with pytest.raises(ValidationError, match=">= 0"):
        RegimeWeights(preference={"x": -1.0})
    with pytest.raises(ValidationError, match="lacks weights"):
        RewardComposition(regimes={"asr": RegimeWeights()})
