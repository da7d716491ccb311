"""Core tables: people, prompts, policies, rollouts, blobs, reward models and scores, datasets, runs.

Relationships are ``lazy="raise"``: every query says what it loads, so no page or job issues
surprise N+1 queries.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from earmark.store.base import Base, created_at_column


def pk() -> Mapped[int]:
    return mapped_column(Identity(), primary_key=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = pk()
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str | None] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cleared_for_aggregation: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (CheckConstraint("role IN ('rater','reviewer','admin','engineer')", name="role"),)


class Persona(Base):
    __tablename__ = "personas"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200), unique=True)
    card: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = created_at_column()


class Blob(Base):
    """Metadata of a content-addressed blob; the bytes live in the blob store, never here."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    uri: Mapped[str] = mapped_column(Text)
    bytes: Mapped[int]
    mime: Mapped[str] = mapped_column(String(100))
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    duration_s: Mapped[float | None] = mapped_column(Double)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (CheckConstraint("bytes >= 0", name="bytes_nonneg"),)


class Prompt(Base):
    __tablename__ = "prompts"
    id: Mapped[int] = pk()
    external_id: Mapped[str] = mapped_column(String(200), unique=True)
    regime: Mapped[str] = mapped_column(String(16), index=True)
    messages: Mapped[list[Any]]
    audio_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    reference: Mapped[dict[str, Any] | None]
    tools: Mapped[list[Any] | None]
    persona_id: Mapped[int | None] = mapped_column(ForeignKey("personas.id"))
    split: Mapped[str] = mapped_column(String(16), default="train")
    tags: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = created_at_column()
    persona: Mapped[Persona | None] = relationship(lazy="raise")
    __table_args__ = (CheckConstraint("regime IN ('asr','tts','realtime','duplex','reasoning')", name="regime"),)


class Policy(Base):
    __tablename__ = "policies"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32), default="offline")
    uri: Mapped[str] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id"))
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", use_alter=True))
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (UniqueConstraint("name", "version"),)


class Rollout(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = pk()
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"))
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id"), index=True)
    round: Mapped[int] = mapped_column(Integer, default=0)
    sample_index: Mapped[int] = mapped_column(Integer)
    messages: Mapped[list[Any]]
    text: Mapped[str] = mapped_column(Text)
    token_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
    audio_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    duration_s: Mapped[float | None] = mapped_column(Double)
    ttfa_s: Mapped[float | None] = mapped_column(Double)
    total_s: Mapped[float | None] = mapped_column(Double)
    sampling: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int | None]
    tool_calls: Mapped[list[Any] | None]
    timeline: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    prompt: Mapped[Prompt] = relationship(lazy="raise")
    policy: Mapped[Policy] = relationship(lazy="raise")
    __table_args__ = (
        # A retried or restarted actor re-sends the same key: the insert becomes a no-op.
        UniqueConstraint("prompt_id", "policy_id", "sample_index", "round"),
        CheckConstraint("sample_index >= 0", name="sample_index_nonneg"),
    )


class RewardModel(Base):
    __tablename__ = "reward_models"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    dimensions: Mapped[list[Any]] = mapped_column(default=list)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (UniqueConstraint("name", "version"),)


class RewardScore(Base):
    __tablename__ = "reward_scores"
    id: Mapped[int] = pk()
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id", ondelete="CASCADE"))
    reward_model_id: Mapped[int] = mapped_column(ForeignKey("reward_models.id"))
    dimension: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Double)
    rationale: Mapped[str | None] = mapped_column(Text)
    features: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        UniqueConstraint("rollout_id", "reward_model_id", "dimension"),
        # NaN compares equal to itself in PostgreSQL; refuse it and infinities at the store too.
        CheckConstraint(
            "score = score AND score > '-Infinity'::float8 AND score < 'Infinity'::float8", name="score_finite"
        ),
        Index("ix_reward_scores_rm_dimension", "reward_model_id", "dimension"),
    )


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    filters: Mapped[dict[str, Any]]
    manifest: Mapped[dict[str, Any]]
    content_sha256: Mapped[str] = mapped_column(String(64))
    uri: Mapped[str] = mapped_column(Text)
    row_count: Mapped[int]
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (UniqueConstraint("name", "version"),)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[int] = pk()
    algorithm: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    config: Mapped[dict[str, Any]]
    dataset_id: Mapped[int | None] = mapped_column(ForeignKey("datasets.id"))
    base_policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id"))
    output_policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id"))
    metrics: Mapped[list[Any]] = mapped_column(default=list)
    summary: Mapped[dict[str, Any]] = mapped_column(default=dict)
    resumes: Mapped[list[Any]] = mapped_column(default=list)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = pk()
    at: Mapped[datetime] = created_at_column()
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64), index=True)
    entity: Mapped[str] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
