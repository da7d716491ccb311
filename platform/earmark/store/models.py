"""All ORM tables, importable from one place (Alembic's target metadata)."""

from earmark.store.base import Base
from earmark.store.models_annotation import Adjudication, Campaign, Comparison, Judgment, Task
from earmark.store.models_core import (
    AuditLog,
    Blob,
    Dataset,
    Persona,
    Policy,
    Prompt,
    RewardModel,
    RewardScore,
    Rollout,
    TrainingRun,
    User,
)

__all__ = [
    "Adjudication",
    "AuditLog",
    "Base",
    "Blob",
    "Campaign",
    "Comparison",
    "Dataset",
    "DriftAlert",
    "Judgment",
    "Persona",
    "Policy",
    "Prompt",
    "RewardModel",
    "RewardScore",
    "Rollout",
    "Task",
    "TrainingRun",
    "User",
]

from earmark.store.models_drift import DriftAlert  # noqa: E402  (drift alerts)
