"""Speech synthesis used by the offline policy and as a fallback voice for text-only policies."""

from pipelines.speech.espeak import (
    Segment,
    read_wav,
    render_segments,
    render_text,
    sample_rate,
    wav_bytes,
)

__all__ = ["Segment", "read_wav", "render_segments", "render_text", "sample_rate", "wav_bytes"]
