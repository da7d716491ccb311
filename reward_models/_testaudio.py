"""Minimal eSpeak NG renderer for tests and benchmarks of the reward models.

Private on purpose: ``pipelines/speech/espeak.py`` is the project's renderer; this copy exists
only so reward_models tests do not depend on the policy package. Prefer that module when it
exists (``render_text`` below delegates to it) and delete this file once deduped.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_espeakRATE, _espeakPITCH = 1, 3
_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()  # libespeak-ng keeps global state: one synthesis at a time
_lib: ctypes.CDLL | None = None
_sr = 22050
_chunks: list[np.ndarray] = []


@_SYNTH_CB
def _on_audio(wav, n, _events):  # type: ignore[no-untyped-def]
    if n > 0 and wav:
        _chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
    return 0


def _init() -> ctypes.CDLL:
    global _lib, _sr
    if _lib is None:
        import espeakng_loader

        lib = ctypes.CDLL(str(espeakng_loader.get_library_path()))
        lib.espeak_Initialize.restype = ctypes.c_int
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(espeakng_loader.get_data_path()).encode(), 0)
        if sr <= 0:
            raise RuntimeError("espeak_Initialize failed; check that the espeakng-loader wheel's data folder exists")
        lib.espeak_SetSynthCallback(_on_audio)
        lib.espeak_SetVoiceByName(b"en-us")
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        _sr, _lib = sr, lib
    return _lib


def _render_private(text: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    with _lock:
        lib = _init()
        lib.espeak_SetParameter(_espeakRATE, int(rate), 0)
        lib.espeak_SetParameter(_espeakPITCH, int(pitch), 0)
        _chunks.clear()
        data = text.encode("utf-8") + b"\0"
        # position_type 0 (POS_CHARACTER), flags espeakCHARS_UTF8 (1)
        lib.espeak_Synth(data, len(data), 0, 0, 0, 1, None, None)
        lib.espeak_Synchronize()
        pcm = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        _chunks.clear()
    return (pcm.astype(np.float32) / 32768.0), _sr


def render_text(text: str, rate: int = 175, pitch: int = 50) -> tuple[np.ndarray, int]:
    """Speech for ``text`` as (float32 mono in [-1, 1], sample rate)."""
    try:  # the project's renderer, when the pipelines helper has landed
        from pipelines.speech.espeak import render_text as project_render  # type: ignore[import-not-found]
    except ImportError:
        return _render_private(text, rate, pitch)
    audio, sr = project_render(text, rate=rate, pitch=pitch)
    return np.asarray(audio, dtype=np.float32), int(sr)
