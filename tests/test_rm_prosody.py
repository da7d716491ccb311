"""Prosody scorer on real eSpeak NG speech: features move the right way, ranking follows the persona."""

from __future__ import annotations

import time

import numpy as np
import pytest

from pipelines.speech.espeak import render_text
from reward_models.base import ScoringInput, build_scorer
from reward_models.prosody import extract_prosody

TEXT = "The quick brown fox jumps over the lazy dog near the river bank. Then it rests for a while."
SLOW_LOW = {"name": "Grandpa Joe", "prosody": {"f0_mean_hz": 80, "rate_wps": 2.0}}
FAST_HIGH = {"name": "Zippy", "prosody": {"f0_mean_hz": 135, "rate_wps": 4.5}}


@pytest.fixture(scope="module")
def clips() -> dict[str, tuple[np.ndarray, int]]:
    return {"slow_low": render_text(TEXT, rate=120, pitch=20), "fast_high": render_text(TEXT, rate=260, pitch=80)}


def _score(persona: dict, clip: tuple[np.ndarray, int]) -> float:
    audio, sr = clip
    item = ScoringInput(regime="tts", persona=persona, response_text=TEXT, audio=audio, sample_rate=sr)
    (res,) = build_scorer("prosody").score_batch([item])[0]
    assert res.dimension == "prosody_match" and 0.0 <= res.score <= 1.0
    assert res.features["targets_used"] == ["f0_mean_hz", "rate_wps"]
    return res.score


def test_features_follow_rendering(clips) -> None:
    lo = extract_prosody(*clips["slow_low"], transcript=TEXT)
    hi = extract_prosody(*clips["fast_high"], transcript=TEXT)
    # eSpeak pitch 20 vs 80 is ~77 vs ~137 Hz mean F0
    assert 65 < lo["f0_mean_hz"] < 90 and 120 < hi["f0_mean_hz"] < 155
    assert hi["rate_wps"] > 1.8 * lo["rate_wps"]
    assert hi["syllable_rate_sps"] > 1.6 * lo["syllable_rate_sps"]  # measured without the transcript
    for f in (lo, hi):
        assert 0.3 < f["voiced_fraction"] <= 1.0 and 0.0 <= f["pause_ratio"] < 0.5 and f["energy_std_db"] > 1


def test_persona_ranking_both_ways(clips) -> None:
    assert _score(SLOW_LOW, clips["slow_low"]) > _score(SLOW_LOW, clips["fast_high"]) + 0.5
    assert _score(FAST_HIGH, clips["fast_high"]) > _score(FAST_HIGH, clips["slow_low"]) + 0.5


def test_no_targets_is_neutral_and_missing_audio_is_an_error(clips) -> None:
    audio, sr = clips["slow_low"]
    (res,) = build_scorer("prosody").score_one(ScoringInput(audio=audio, sample_rate=sr))
    assert res.score == 0.5 and res.features["targets_used"] == []
    with pytest.raises(ValueError, match="needs audio"):
        build_scorer("prosody").score_one(ScoringInput(response_text="hi"))
    with pytest.raises(ValueError, match="empty"):
        extract_prosody(np.zeros(0, np.float32), 16000)


def test_faster_than_real_time(clips) -> None:
    audio, sr = clips["slow_low"]
    extract_prosody(audio, sr)
    t = time.perf_counter()
    for _ in range(5):
        extract_prosody(audio, sr)
    rtf = 5 * len(audio) / sr / (time.perf_counter() - t)
    # bench/scoring.py measures ~300x on an idle core; the test only guards against regressions
    assert rtf > 50, rtf
