"""Audio decoding and validation (soundfile + numpy only, so the store and UI stay torch-free)."""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from earmark.domain.limits import Limits
from earmark.errors import InvalidInput


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    frames: int
    mime: str

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


_MIME = {"WAV": "audio/wav", "FLAC": "audio/flac", "OGG": "audio/ogg", "MP3": "audio/mpeg"}


def probe(data: bytes) -> AudioInfo:
    """Read the header and check the whole file decodes; raise InvalidInput naming what is wrong."""
    import soundfile as sf

    if len(data) > Limits.MAX_AUDIO_BYTES:
        raise InvalidInput(
            f"audio is {len(data)} bytes; the limit is {Limits.MAX_AUDIO_BYTES} bytes: "
            "split the clip or lower its sample rate"
        )
    if len(data) < 44:
        raise InvalidInput(f"audio is only {len(data)} bytes, too short to be a WAV/FLAC file; upload the whole file")
    _check_riff_sizes(data)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            info = AudioInfo(f.samplerate, f.channels, f.frames, _MIME.get(f.format, "application/octet-stream"))
            declared_s = info.frames / max(info.sample_rate, 1)
            if declared_s > Limits.MAX_AUDIO_SECONDS:
                raise InvalidInput(
                    f"audio declares {declared_s:.0f} s; the limit is {Limits.MAX_AUDIO_SECONDS:.0f} s per clip: "
                    "split it into shorter clips"
                )
            samples = f.read(dtype="float32", always_2d=True)
    except InvalidInput:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for garbage
        raise InvalidInput(
            f"audio could not be decoded ({type(exc).__name__}: {exc}); upload a PCM WAV or FLAC file"
        ) from None
    if not (Limits.MIN_SAMPLE_RATE <= info.sample_rate <= Limits.MAX_SAMPLE_RATE):
        raise InvalidInput(
            f"audio sample rate {info.sample_rate} Hz is outside {Limits.MIN_SAMPLE_RATE}-"
            f"{Limits.MAX_SAMPLE_RATE} Hz; resample it (e.g. to 16000 or 22050 Hz)"
        )
    if samples.shape[0] != info.frames or samples.shape[0] == 0:
        raise InvalidInput(
            f"audio is truncated: header says {info.frames} frames, {samples.shape[0]} decoded; re-export the file"
        )
    if not np.isfinite(samples).all():
        raise InvalidInput("audio contains NaN or infinite samples; re-render or re-encode it")
    return info


def _check_riff_sizes(data: bytes) -> None:
    """libsndfile quietly decodes what is there; a WAV whose header declares more bytes than the
    file holds was cut off in transfer (or lies about its size), so refuse it explicitly."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared > len(data):
        raise InvalidInput(
            f"audio is truncated: the WAV header declares {declared} bytes but the file has {len(data)}; "
            "re-export or re-upload the whole file"
        )
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"data" and pos + 8 + size > len(data):
            raise InvalidInput(
                f"audio is truncated: the WAV data chunk declares {size} bytes but only "
                f"{len(data) - pos - 8} follow; re-export or re-upload the whole file"
            )
        pos += 8 + size + (size & 1)


def to_wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """Encode mono/stereo float audio as 16-bit PCM WAV."""
    import soundfile as sf

    arr = np.asarray(audio, dtype=np.float32)
    if arr.size == 0:
        raise InvalidInput("cannot encode empty audio (0 samples)")
    if not np.isfinite(arr).all():
        raise InvalidInput("audio contains NaN or infinite samples; fix the renderer that produced it")
    buf = io.BytesIO()
    sf.write(buf, np.clip(arr, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decode(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(data), dtype="float32")
    return audio, int(sr)


def resample(audio: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy) of mono audio; returns the input when the rates agree."""
    if sr_from == sr_to:
        return np.asarray(audio, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_from), int(sr_to))
    return resample_poly(np.asarray(audio, dtype=np.float32), sr_to // g, sr_from // g).astype(np.float32)


def stereo_wav(left: tuple[np.ndarray, int], right: tuple[np.ndarray, int], duration_s: float | None = None) -> bytes:
    """Two session-aligned mono tracks (audio, sample_rate) as one stereo WAV for listening.

    Both tracks start at t=0 (a duplex timeline's user channel left, assistant channel right);
    the shorter one is padded with silence, and ``duration_s`` (the timeline's length) pads or
    trims both. The output takes the higher of the two sample rates.
    """
    (la, lsr), (ra, rsr) = left, right
    for name, a in (("left", la), ("right", ra)):
        if np.asarray(a).ndim != 1:
            raise InvalidInput(f"{name} track must be mono (1-D); average its channels first")
    sr = max(int(lsr), int(rsr))
    la, ra = resample(la, lsr, sr), resample(ra, rsr, sr)
    n = max(la.size, ra.size) if duration_s is None else int(round(duration_s * sr))
    if n <= 0:
        raise InvalidInput("both tracks are empty; a duplex timeline needs audio on at least one channel")
    out = np.zeros((n, 2), dtype=np.float32)
    out[: min(n, la.size), 0] = la[:n]
    out[: min(n, ra.size), 1] = ra[:n]
    return to_wav_bytes(out, sr)


def read_source(path: str | None, b64: str | None, base_dir: Path | None, where: str) -> bytes | None:
    """Bytes of an audio part or track given on import as a file ``path`` (relative to the import
    file's folder) or ``base64``; None when it has neither (it references a stored blob instead)."""
    if path:
        p = Path(path)
        p = base_dir / p if not p.is_absolute() and base_dir is not None else p
        try:
            return p.read_bytes()
        except OSError:
            raise InvalidInput(f"{where}: audio file {path} not found; paths are relative to the JSONL file") from None
    if b64:
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: audio base64 is not valid base64; encode the WAV bytes") from None
    return None
