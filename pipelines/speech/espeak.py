"""eSpeak NG speech synthesis through the ``espeakng-loader`` wheel (ctypes, no apt package).

The C library keeps one global synthesizer (voice, rate, pitch, callback), so every call here
holds a process-wide lock and the library is initialised once per process. Segments let a
caller vary rate and pitch inside one utterance: each segment is synthesised with its own
parameters and the pieces are joined with explicit silences, which is how the offline speech
policy turns its prosody-control tokens into audio.

eSpeak NG keeps wavegen state (pitch-flutter phase) between calls, so two renders of the same
text can differ by a few hundred samples; callers that need reproducibility should key on the
text and segment plan (which are exact), not on audio bytes.
"""

from __future__ import annotations

import ctypes
import io
import threading
from dataclasses import dataclass

import numpy as np

# Constants from speak_lib.h (espeak-ng 1.5x); ctypes cannot read C enums.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_ESPEAK_RATE = 1
_ESPEAK_VOLUME = 2
_ESPEAK_PITCH = 3
_ESPEAK_RANGE = 4
_EE_OK = 0

# eSpeak accepts 80..450 words/min without the optional sonic speed-up; pitch/range are 0..100.
MIN_RATE_WPM = 80
MAX_RATE_WPM = 450
DEFAULT_RATE_WPM = 175
DEFAULT_PITCH = 50
DEFAULT_RANGE = 50
DEFAULT_VOICE = "en-us"
MAX_PAUSE_MS = 5000
# Emphasis: a wider pitch range, a small pitch lift, slightly slower and louder, which eSpeak
# renders as a stressed word (it has no per-word emphasis API outside SSML).
_EMPH_RANGE = 90
_EMPH_PITCH_LIFT = 8
_EMPH_RATE_FACTOR = 0.88
_EMPH_VOLUME = 130
_NORMAL_VOLUME = 100

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """eSpeak NG could not be loaded or failed to synthesise."""


@dataclass(frozen=True)
class Segment:
    """A stretch of speech with one prosody setting, followed by an optional silence."""

    text: str
    rate: int = DEFAULT_RATE_WPM  # words per minute
    pitch: int = DEFAULT_PITCH  # 0 (low) .. 100 (high), eSpeak's base pitch
    emphasis: bool = False
    pause_after_ms: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "text": self.text,
            "rate": self.rate,
            "pitch": self.pitch,
            "emphasis": self.emphasis,
            "pause_after_ms": self.pause_after_ms,
        }


class _Engine:
    """The process-wide eSpeak NG instance; create through ``_engine()``."""

    def __init__(self, voice: str) -> None:
        try:
            import espeakng_loader
        except ImportError as exc:  # pragma: no cover - dependency of the project
            raise EspeakError("espeakng-loader is not installed: pip install espeakng-loader") from exc
        lib_path = espeakng_loader.get_library_path()
        try:
            self.lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EspeakError(f"cannot load eSpeak NG from {lib_path}: {exc}; reinstall espeakng-loader") from exc
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        sr = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if sr <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {sr}) with data path {data_path.decode()}")
        self.sample_rate = int(sr)
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SYNTH_CALLBACK(self._on_samples)
        lib.espeak_SetSynthCallback(self._callback)
        self.voice = ""
        self.set_voice(voice)

    def _on_samples(self, wav: ctypes._Pointer[ctypes.c_short], numsamples: int, _events: int) -> int:
        if wav and numsamples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(numsamples,)).copy())
        return 0  # 0 = continue synthesis

    def set_voice(self, voice: str) -> None:
        if voice == self.voice:
            return
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise EspeakError(f"unknown eSpeak NG voice {voice!r}; try 'en-us' or 'en'")
        self.voice = voice

    def synth(self, text: str, rate: int, pitch: int, rng: int, volume: int) -> np.ndarray:
        lib = self.lib
        lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
        lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
        lib.espeak_SetParameter(_ESPEAK_RANGE, int(rng), 0)
        lib.espeak_SetParameter(_ESPEAK_VOLUME, int(volume), 0)
        self._chunks = []
        buf = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        if err != _EE_OK:
            raise EspeakError(f"espeak_Synth failed with code {err} for text {text[:60]!r}")
        lib.espeak_Synchronize()
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)


_LOCK = threading.RLock()
_ENGINE: _Engine | None = None


def _engine(voice: str = DEFAULT_VOICE) -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine(voice)
    _ENGINE.set_voice(voice)
    return _ENGINE


def sample_rate() -> int:
    """eSpeak NG's output rate (22050 Hz for the bundled voices); initialises the library."""
    with _LOCK:
        return _engine().sample_rate


def _clamp(value: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(value))))


def render_segments(segments: list[Segment], voice: str = DEFAULT_VOICE) -> tuple[np.ndarray, int]:
    """Synthesise ``segments`` in order; returns (mono float32 in [-1, 1], sample_rate).

    Out-of-range rate/pitch are clamped to what eSpeak accepts rather than rejected, because
    they come from sampled model output. Empty text with a pause still yields the silence.
    """
    pieces: list[np.ndarray] = []
    with _LOCK:
        eng = _engine(voice)
        sr = eng.sample_rate
        for seg in segments:
            text = seg.text.strip()
            if text:
                rate = seg.rate * (_EMPH_RATE_FACTOR if seg.emphasis else 1.0)
                pitch = seg.pitch + (_EMPH_PITCH_LIFT if seg.emphasis else 0)
                pcm = eng.synth(
                    text,
                    rate=_clamp(rate, MIN_RATE_WPM, MAX_RATE_WPM),
                    pitch=_clamp(pitch, 0, 100),
                    rng=_EMPH_RANGE if seg.emphasis else DEFAULT_RANGE,
                    volume=_EMPH_VOLUME if seg.emphasis else _NORMAL_VOLUME,
                )
                pieces.append(pcm.astype(np.float32) / 32768.0)
            pause = _clamp(seg.pause_after_ms, 0, MAX_PAUSE_MS)
            if pause:
                pieces.append(np.zeros(int(sr * pause / 1000), dtype=np.float32))
    audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False), sr


def render_text(
    text: str, rate: int = DEFAULT_RATE_WPM, pitch: int = DEFAULT_PITCH, voice: str = DEFAULT_VOICE
) -> tuple[np.ndarray, int]:
    """Synthesise plain text with one rate (words/min) and pitch (0-100)."""
    return render_segments([Segment(text=text, rate=rate, pitch=pitch)], voice=voice)


def wav_bytes(audio: np.ndarray, sr: int) -> bytes:
    """Encode mono float audio in [-1, 1] as a 16-bit PCM WAV file."""
    import soundfile as sf

    arr = np.asarray(audio, dtype=np.float32)
    if arr.ndim != 1:
        raise ValueError(f"wav_bytes expects mono audio (1-D), got shape {arr.shape}; mix down first")
    buf = io.BytesIO()
    sf.write(buf, np.clip(arr, -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV bytes to (mono float32, sample_rate); multi-channel audio is averaged."""
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.mean(axis=1).astype(np.float32), int(sr)
