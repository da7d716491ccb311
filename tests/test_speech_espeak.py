"""eSpeak NG synthesis: real audio through the espeakng-loader wheel, measured with Praat."""

from __future__ import annotations

import threading

import numpy as np
import parselmouth
import pytest

from pipelines.speech.espeak import (
    Segment,
    read_wav,
    render_segments,
    render_text,
    sample_rate,
    wav_bytes,
)

SENTENCE = "The quick brown fox jumps over the lazy dog near the quiet river bank."


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def _longest_zero_run(a: np.ndarray) -> int:
    best = run = 0
    for is_zero in a == 0:
        run = run + 1 if is_zero else 0
        best = max(best, run)
    return best


def _mean_f0(audio: np.ndarray, sr: int) -> float:
    f0 = parselmouth.Sound(audio.astype(np.float64), sr).to_pitch().selected_array["frequency"]
    return float(f0[f0 > 0].mean())


def test_render_text_is_real_speech() -> None:
    audio, sr = render_text(SENTENCE)
    assert sr == sample_rate() == 22050
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 2.0 < len(audio) / sr < 8.0
    assert _rms(audio) > 0.02 and np.abs(audio).max() <= 1.0
    # Speech is voiced for a good part of the clip (a tone or noise would not give this).
    f0 = parselmouth.Sound(audio.astype(np.float64), sr).to_pitch().selected_array["frequency"]
    assert (f0 > 0).mean() > 0.3


def test_slower_rate_gives_longer_audio() -> None:
    durations = [len(render_text(SENTENCE, rate=r)[0]) for r in (120, 175, 260)]
    assert durations[0] > durations[1] * 1.2 > durations[2] * 1.2


def test_higher_pitch_gives_higher_f0() -> None:
    f0 = [_mean_f0(*render_text(SENTENCE, pitch=p)) for p in (20, 50, 80)]
    assert f0[0] + 5 < f0[1] and f0[1] + 10 < f0[2], f0


def test_segments_insert_exact_pauses_and_emphasis() -> None:
    a, sr = render_text("Hello there.")
    b, _ = render_text("Good night.")
    both, _ = render_segments([Segment("Hello there.", pause_after_ms=500), Segment("Good night.")])
    # eSpeak NG carries pitch-flutter phase across calls, so renders differ by a few samples.
    assert abs(len(both) - (len(a) + int(sr * 0.5) + len(b))) < 0.01 * sr
    assert _longest_zero_run(both) >= int(sr * 0.5)
    assert _longest_zero_run(a) < int(sr * 0.4)
    plain, _ = render_segments([Segment("really")])
    stressed, _ = render_segments([Segment("really", emphasis=True)])
    assert _rms(stressed) > _rms(plain) * 1.1  # louder and with a wider pitch range


def test_out_of_range_values_are_clamped_and_empty_text_is_silence() -> None:
    audio, sr = render_segments([Segment("Fast words.", rate=5000, pitch=-40), Segment("", pause_after_ms=250)])
    assert _rms(audio) > 0.01
    assert not audio[-int(sr * 0.25) :].any()
    empty, _ = render_segments([])
    assert empty.size == 0


def test_wav_round_trip() -> None:
    audio, sr = render_text("Round trip.")
    data = wav_bytes(audio, sr)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    back, sr2 = read_wav(data)
    assert sr2 == sr and len(back) == len(audio)
    assert np.abs(back - audio).max() <= 1.0 / 32768 + 1e-6
    with pytest.raises(ValueError, match="mono"):
        wav_bytes(np.zeros((10, 2), dtype=np.float32), sr)


def test_concurrent_rendering_keeps_each_callers_settings() -> None:
    texts = [
        "Number one is speaking here.",
        "Thread two is talking now, slowly.",
        "Three has a much longer sentence to say than the others.",
        "Four reads a line of its own.",
    ]
    pitches = [10, 40, 70, 100]  # about 20 Hz or more apart in mean F0
    serial = [render_text(t, pitch=p)[0] for t, p in zip(texts, pitches)]
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        for _ in range(3):
            results[i] = render_text(texts[i], pitch=pitches[i])[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The library is global: without the lock, threads would mix each other's pitch and samples.
    # eSpeak NG keeps some state from one utterance to the next (pipelines/duplex/tts.py renders from a
    # fresh library for that reason), so a clip rendered after other callers' clips may differ a few Hz
    # from its serial twin: each thread's clip must be nearest its own pitch, not the others'.
    serial_f0 = [_mean_f0(e, 22050) for e in serial]
    for i, expected in enumerate(serial):
        assert abs(len(results[i]) - len(expected)) < 0.03 * len(expected)
        got = _mean_f0(results[i], 22050)
        assert min(range(len(serial_f0)), key=lambda k: abs(got - serial_f0[k])) == i, (got, serial_f0)
        assert abs(got - serial_f0[i]) < 0.12 * serial_f0[i], (got, serial_f0)
