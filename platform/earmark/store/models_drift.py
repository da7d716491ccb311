"""Drift alerts: one row per threshold crossed by a drift report, kept for the dashboard and audits."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from earmark.store.base import Base, created_at_column
from earmark.store.models_core import pk

DRIFT_ALERT_KINDS = ("psi", "ks", "mean_shift", "hacking_duration", "hacking_length", "judge_agreement", "trap")
DRIFT_ALERT_SEVERITIES = ("warning", "alert")


class DriftAlert(Base):
    __tablename__ = "drift_alerts"
    id: Mapped[int] = pk()
    # All alerts of one `earmark drift report` run (or one dashboard "store alerts") share this.
    report_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    kind: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))
    policy: Mapped[str] = mapped_column(String(200))
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    candidate_version: Mapped[int | None] = mapped_column(Integer)
    reward_model_id: Mapped[int | None] = mapped_column(ForeignKey("reward_models.id"))
    dimension: Mapped[str | None] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Double)
    threshold: Mapped[float] = mapped_column(Double)
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        CheckConstraint(f"kind IN ({', '.join(repr(k) for k in DRIFT_ALERT_KINDS)})", name="kind"),
        CheckConstraint("severity IN ('warning','alert')", name="severity"),
        CheckConstraint("value = value AND threshold = threshold", name="not_nan"),
        Index("ix_drift_alerts_policy_created", "policy", "created_at"),
        Index("ix_drift_alerts_report_id", "report_id"),
    )
