"""Named limits for everything a user can send in. One place, so errors and docs agree."""

from __future__ import annotations


class Limits:
    MAX_TEXT_CHARS = 20_000  # one message's text
    MAX_MESSAGES = 200  # per conversation
    MAX_RATIONALE_CHARS = 4_000
    MAX_NAME_CHARS = 200
    MAX_AUDIO_BYTES = 64 * 1024 * 1024  # one uploaded clip
    MAX_AUDIO_SECONDS = 600.0
    MIN_SAMPLE_RATE = 8_000
    MAX_SAMPLE_RATE = 48_000
    MAX_JSON_BYTES = 1_000_000  # persona cards, references, tool schemas
    MAX_SAMPLES_PER_PROMPT = 64
    MAX_QUERY_CHARS = 400_000  # one prompt + response sent to the reward service (long reasoning traces)
