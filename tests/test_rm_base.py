"""Scorer interface, registry, versions, and the no-torch import rule for base/composition."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from reward_models.base import Scorer, ScoreResult, ScoringInput, build_scorer, list_scorers, register


def test_registry_lists_builtins_and_builds() -> None:
    names = list_scorers()
    assert {"prosody", "answer_match", "wer", "tool_calls", "judge", "bt_reward"} <= set(names)
    assert names["prosody"]["kind"] == "acoustic"
    assert names["judge"]["kind"] == "generative"
    s = build_scorer("answer_match")
    assert s.name == "answer_match" and s.dimensions == ("exact_match", "normalized_match")
    with pytest.raises(KeyError, match="unknown scorer 'nope'"):
        build_scorer("nope")
    with pytest.raises(TypeError, match="unknown config keys"):
        build_scorer("answer_match", allow_containmnet=False)


def test_version_changes_with_config_and_code_version() -> None:
    a = build_scorer("answer_match")
    b = build_scorer("answer_match", allow_containment=False)
    assert a.version != b.version
    assert a.version == build_scorer("answer_match").version  # deterministic
    assert a.version.startswith("2+") and len(a.version.split("+")[1]) == 10

    @register("test_rm_dummy")
    class Dummy(Scorer):
        dimensions = ("x",)
        code_version = "7"
        default_config = {"k": 1}

        def score_one(self, item: ScoringInput) -> list[ScoreResult]:
            return [ScoreResult(dimension="x", score=0.25)]

    d = build_scorer("test_rm_dummy")
    assert d.version.startswith("7+")
    assert d.score_batch([ScoringInput(), ScoringInput()]) == [[ScoreResult(dimension="x", score=0.25)]] * 2


def test_scoring_input_validation() -> None:
    pcm = np.arange(100, dtype=np.int16) * 300
    it = ScoringInput(
        audio=pcm,
        sample_rate=16000,
        persona={"prosody": {"f0_mean_hz": 100}},
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "audio"}]}],
    )
    assert it.audio is not None and it.audio.dtype == np.float32 and abs(float(it.audio.max())) < 1.0
    assert it.prosody_targets == {"f0_mean_hz": 100}
    assert it.prompt_text() == "user: hi"
    with pytest.raises(ValueError, match="sample_rate"):
        ScoringInput(audio=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="mono"):
        ScoringInput(audio=np.zeros((2, 10), np.float32), sample_rate=16000)
    with pytest.raises(ValueError):
        ScoringInput(regime="karaoke")


def test_base_and_composition_import_without_torch() -> None:
    code = (
        "import sys, reward_models, reward_models.composition, reward_models.shortcut;"
        "reward_models.list_scorers();"
        "bad = [m for m in ('torch', 'transformers', 'faster_whisper') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
