"""Judgments imported from outside tools (Chatbot Arena, Label Studio, Argilla, HF datasets, earmark
exports). They keep their source and annotator and never pass as earmark raters' work: they live
here, not in ``judgments``, so rater quality, gold screening and agreement never see them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Double, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from earmark.store.base import Base, created_at_column
from earmark.store.models_core import pk


class ExternalJudgment(Base):
    __tablename__ = "external_judgments"
    id: Mapped[int] = pk()
    source: Mapped[str] = mapped_column(String(200))  # e.g. "arena:battles.jsonl", "label-studio:export.json"
    external_id: Mapped[str] = mapped_column(String(200))  # the judgment's id in its source
    annotator: Mapped[str | None] = mapped_column(String(200))  # as the source names them; never a users row
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id"), index=True)
    rollout_a_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    rollout_b_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    dimension: Mapped[str] = mapped_column(String(64), default="overall")
    preference: Mapped[float] = mapped_column(Double)  # +1 A better, -1 B better, 0 tie
    tie: Mapped[bool] = mapped_column(default=False)
    both_bad: Mapped[bool] = mapped_column(default=False)
    confidence: Mapped[float | None] = mapped_column(Double)
    comment: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)  # ratings, raw choice, source fields
    content_sha256: Mapped[str] = mapped_column(String(64))  # of the judgment as imported (conflict check)
    created_at: Mapped[datetime] = created_at_column()
    __table_args__ = (
        UniqueConstraint("source", "external_id"),
        CheckConstraint("preference >= -1 AND preference <= 1", name="preference_range"),
        CheckConstraint("confidence IS NULL OR (confidence >= 0 AND confidence <= 1)", name="confidence_range"),
    )
