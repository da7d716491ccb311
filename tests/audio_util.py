"""Small real audio for tests (a tone, not a mock): numpy + soundfile."""

from __future__ import annotations

import numpy as np

from earmark.audio import to_wav_bytes


def tone(seconds: float = 0.5, sr: int = 16000, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def tone_wav(seconds: float = 0.5, sr: int = 16000, hz: float = 220.0) -> bytes:
    return to_wav_bytes(tone(seconds, sr, hz), sr)
