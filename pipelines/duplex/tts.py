"""Reproducible eSpeak NG renders for scenario audio: the same text gives the same samples, always.

eSpeak NG keeps wavegen state (pitch-flutter phase, echo buffer) in static variables that
``espeak_Terminate`` / ``espeak_Initialize`` do not reset, so a render depends on every render
before it in the process (``pipelines.speech.espeak`` documents this). Scenario ids name their audio
(``duplex-pause-3`` must mean the same bytes on every machine, or re-importing a regenerated suite
would clash with the stored one), so each utterance here is rendered by a private copy of the library
that is loaded fresh and unloaded afterwards (``dlclose``): every render starts from the library's
initial state. A private copy, because the shared library may be held open by the policy's renderer
in the same process, and then ``dlclose`` would not unload it. Costs ~15-30 ms per utterance.
"""

from __future__ import annotations

import _ctypes
import ctypes
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from pipelines.speech.espeak import (
    DEFAULT_PITCH,
    DEFAULT_RANGE,
    DEFAULT_RATE_WPM,
    DEFAULT_VOICE,
    MAX_RATE_WPM,
    MIN_RATE_WPM,
    EspeakError,
)

# speak_lib.h constants (ctypes cannot read C enums); the same values pipelines.speech.espeak uses.
_SYNCHRONOUS, _CHARS_UTF8, _POS_CHARACTER = 2, 1, 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_LOCK = threading.Lock()
_PRIVATE: list[tuple[str, bytes]] = []  # (private library path, data path)


def _private_library() -> tuple[str, bytes]:
    if not _PRIVATE:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise EspeakError("espeakng-loader is not installed: pip install espeakng-loader") from exc
        folder = Path(tempfile.mkdtemp(prefix="earmark-espeak-"))
        path = folder / "libespeak-ng-fresh.so"
        shutil.copyfile(espeakng_loader.get_library_path(), path)
        _PRIVATE.append((str(path), espeakng_loader.get_data_path().encode()))
    return _PRIVATE[0]


def render_fresh(
    text: str, rate: int = DEFAULT_RATE_WPM, pitch: int = DEFAULT_PITCH, voice: str = DEFAULT_VOICE
) -> tuple[np.ndarray, int]:
    """Synthesise ``text`` from eSpeak NG's initial state; returns (mono float32 in [-1, 1], sample_rate)."""
    path, data_path = _private_library()
    chunks: list[np.ndarray] = []

    def on_samples(wav, n, _events):  # noqa: ANN001, ANN202 - ctypes callback
        if wav and n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = _CALLBACK(on_samples)
    with _LOCK:
        lib = ctypes.CDLL(path, mode=ctypes.RTLD_LOCAL)
        try:
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            sr = lib.espeak_Initialize(_SYNCHRONOUS, 0, data_path, 0)
            if sr <= 0:
                raise EspeakError(f"espeak_Initialize failed (returned {sr}); reinstall espeakng-loader")
            lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
            lib.espeak_SetSynthCallback(callback)
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise EspeakError(f"unknown eSpeak NG voice {voice!r}; try 'en-us' or 'en'")
            lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
            lib.espeak_SetParameter(_RATE, int(min(MAX_RATE_WPM, max(MIN_RATE_WPM, rate))), 0)
            lib.espeak_SetParameter(_PITCH, int(min(100, max(0, pitch))), 0)
            lib.espeak_SetParameter(_RANGE, DEFAULT_RANGE, 0)
            lib.espeak_SetParameter(_VOLUME, 100, 0)
            buf = text.encode("utf-8") + b"\0"
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise EspeakError(f"espeak_Synth failed with code {err} for text {text[:60]!r}")
            lib.espeak_Synchronize()
            lib.espeak_Terminate()
        finally:
            handle = lib._handle
            del lib
            _ctypes.dlclose(handle)  # the next render loads the library, and its state, afresh
    if not chunks:
        return np.zeros(0, dtype=np.float32), int(sr)
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    return np.clip(audio, -1.0, 1.0), int(sr)
