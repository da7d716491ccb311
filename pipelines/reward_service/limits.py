"""What one reward request may hold. Checked before any scoring, answered as 4xx."""

from __future__ import annotations

from pydantic import BaseModel, Field

from earmark.domain.limits import Limits


class ServiceLimits(BaseModel):
    max_body_bytes: int = Field(32 * 1024 * 1024, description="request body, bytes")
    max_queries: int = Field(512, description="queries per request")
    max_query_chars: int = Field(Limits.MAX_QUERY_CHARS, description="prompt + response, characters")
    max_label_bytes: int = Field(Limits.MAX_JSON_BYTES, description="one label as JSON, bytes")
    max_audio_bytes: int = Field(Limits.MAX_AUDIO_BYTES, description="one clip, bytes (decoded)")
    max_audio_seconds: float = Field(Limits.MAX_AUDIO_SECONDS)
    min_sample_rate: int = Field(Limits.MIN_SAMPLE_RATE)
    max_sample_rate: int = Field(Limits.MAX_SAMPLE_RATE)
    body_read_timeout_s: float = Field(30.0, description="a client must send its whole body within this")
    keep_alive_timeout_s: float = Field(5.0, description="idle keep-alive connections close after this")
    max_connections: int = Field(2048, description="per worker; beyond it uvicorn answers 503")
    max_inflight: int = Field(1024, description="requests being scored or recorded per worker; beyond: 503")
    record_timeout_s: float = Field(30.0, description="longest wait for the store to commit a request's events")
