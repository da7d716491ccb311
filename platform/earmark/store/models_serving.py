"""Reward service (issue 15): named client tokens, stored as hashes, and one serving event per
score the reward endpoint served (who asked, for which run/step/sample, what was scored, how)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Double, Index, Integer, String, Text, Uuid, text
from sqlalchemy.dialects.postgresql import JSON
from sqlalchemy.orm import Mapped, mapped_column

from earmark.store.base import Base, created_at_column
from earmark.store.models_core import pk


class RewardToken(Base):
    __tablename__ = "reward_tokens"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # sha256 hex of a 256-bit random token; the token itself is shown once and never stored
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = created_at_column()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ServingEvent(Base):
    """One served score. Written on the reward endpoint's hot path (COPY, group commit), so the
    row is lean: keyed by (request_id, item_index) with time-ordered request ids, json (not jsonb)
    for the documents nothing queries inside, BRIN on created_at (migration 0008)."""

    __tablename__ = "serving_events"
    request_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    item_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = created_at_column()
    token_name: Mapped[str] = mapped_column(String(200))
    run_id: Mapped[str | None] = mapped_column(String(200))
    global_step: Mapped[int | None] = mapped_column(BigInteger)
    sample_uid: Mapped[str | None] = mapped_column(String(200))
    regime: Mapped[str] = mapped_column(String(32))
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    label: Mapped[Any | None] = mapped_column(JSON)
    scorer_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    composition_version: Mapped[str] = mapped_column(String(64))
    score: Mapped[float | None] = mapped_column(Double)
    parts: Mapped[dict[str, Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (
        CheckConstraint("(score IS NULL) <> (error IS NULL)", name="score_or_error"),
        Index("ix_serving_events_run_step", "run_id", "global_step", postgresql_where=text("run_id IS NOT NULL")),
        Index("ix_serving_events_created_at", "created_at", postgresql_using="brin"),
    )
