"""Annotation-app tables (issue 18): rater groups and campaign assignment, skips, login throttles, app secrets."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from earmark.store.base import Base, created_at_column
from earmark.store.models_annotation import Task
from earmark.store.models_core import pk


class RaterGroup(Base):
    __tablename__ = "rater_groups"
    id: Mapped[int] = pk()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = created_at_column()


class RaterGroupMember(Base):
    __tablename__ = "rater_group_members"
    group_id: Mapped[int] = mapped_column(ForeignKey("rater_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)


class CampaignGroup(Base):
    """A campaign with rows here is served only to members of those groups; without rows, to every rater."""

    __tablename__ = "campaign_groups"
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("rater_groups.id", ondelete="CASCADE"), primary_key=True)


class TaskSkip(Base):
    """A rater skipped this item: it is not served to them again (the slot goes to others)."""

    __tablename__ = "task_skips"
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[datetime] = created_at_column()


class LoginThrottle(Base):
    """Failed-login counters per key (a hash of client+name, or of the client alone); shared by replicas."""

    __tablename__ = "login_throttles"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = created_at_column()


class AppSecret(Base):
    """Generated secrets every app replica must share (the session-cookie signing key)."""

    __tablename__ = "app_secrets"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()


# Depth-first serving walks a campaign's unfinished slots item by item (issue 18).
Index(
    "ix_tasks_pending_depth",
    Task.campaign_id,
    Task.comparison_id,
    Task.slot,
    Task.id,
    postgresql_where=text("status <> 'done'"),
)
