"""Annotation tables: campaigns, comparisons (what is judged), tasks (leased slots), judgments."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from earmark.store.base import Base, created_at_column
from earmark.store.models_core import pk


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    protocol: Mapped[str] = mapped_column(String(16))
    dimensions: Mapped[list[Any]] = mapped_column(default=list)
    overlap: Mapped[int] = mapped_column(Integer, default=1)
    gold_ratio: Mapped[float] = mapped_column(Double, default=0.0)
    instructions: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="draft")
    selection: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        CheckConstraint("overlap BETWEEN 1 AND 50", name="overlap_range"),
        CheckConstraint("gold_ratio >= 0 AND gold_ratio <= 0.9", name="gold_ratio_range"),
        CheckConstraint("protocol IN ('pairwise','mos','cmos','mushra','timeline')", name="protocol"),
    )


class Comparison(Base):
    """An item to judge: one rollout (MOS, timeline), a pair (A/B, CMOS) or several (MUSHRA)."""

    __tablename__ = "comparisons"
    id: Mapped[int] = pk()
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    rollout_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    is_gold: Mapped[bool] = mapped_column(default=False)
    gold_answer: Mapped[dict[str, Any] | None]
    reason: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_at_column()
    campaign: Mapped[Campaign] = relationship(lazy="raise")
    __table_args__ = (CheckConstraint("cardinality(rollout_ids) >= 1", name="has_rollouts"),)


class Task(Base):
    """One of the k rating slots of a comparison; leased to at most one rater at a time."""

    __tablename__ = "tasks"
    id: Mapped[int] = pk()
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    slot: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="open")
    leased_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    lease_token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    presentation: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    comparison: Mapped[Comparison] = relationship(lazy="raise")
    __table_args__ = (
        UniqueConstraint("comparison_id", "slot"),
        CheckConstraint("status IN ('open','leased','done')", name="status"),
        Index("ix_tasks_claim", "campaign_id", "status", "lease_expires_at"),
        Index("ix_tasks_pending", "campaign_id", "slot", "id", postgresql_where=text("status <> 'done'")),
    )


class Judgment(Base):
    __tablename__ = "judgments"
    id: Mapped[int] = pk()
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"), index=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    submission_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    protocol: Mapped[str] = mapped_column(String(16))
    # Canonical preference in rollout_ids order (A = rollout_ids[0]): +1 strongly A ... -1 strongly B.
    preference: Mapped[float | None] = mapped_column(Double)
    choice: Mapped[str | None] = mapped_column(String(16))
    ratings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    rationale: Mapped[str] = mapped_column(Text, default="")
    listen_ms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    events: Mapped[list[Any]] = mapped_column(default=list)
    presentation: Mapped[dict[str, Any] | None]
    is_gold: Mapped[bool] = mapped_column(default=False)
    gold_correct: Mapped[bool | None]
    late: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        # A rater never judges the same item twice, whatever slot they were handed.
        UniqueConstraint("comparison_id", "rater_id"),
        CheckConstraint("preference IS NULL OR (preference >= -1 AND preference <= 1)", name="pref_range"),
    )


class Adjudication(Base):
    """A reviewer's decided label for a disputed comparison, in canonical order (A = rollout_ids[0]).

    One row per comparison: a later decision replaces the earlier one (upsert), and the audit log
    keeps every decision with who made it.
    """

    __tablename__ = "adjudications"
    id: Mapped[int] = pk()
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id"), unique=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    choice: Mapped[str] = mapped_column(String(16))
    preference: Mapped[float | None] = mapped_column(Double)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        CheckConstraint("choice IN ('A','B','tie','both_bad')", name="choice"),
        CheckConstraint("preference IS NULL OR (preference >= -1 AND preference <= 1)", name="pref_range"),
    )
