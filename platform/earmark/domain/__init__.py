"""Domain types: enums, limits and pydantic models that cross boundaries. No I/O, no ORM."""

from earmark.domain.enums import CampaignStatus, JobStatus, Protocol, Regime, Role, ScorerKind, TaskStatus
from earmark.domain.limits import Limits
from earmark.domain.messages import Message, ToolCall, validate_messages
from earmark.domain.records import PersonaCreate, PromptCreate, RolloutCreate, ScoreCreate

__all__ = [
    "CampaignStatus",
    "JobStatus",
    "Limits",
    "Message",
    "PersonaCreate",
    "PromptCreate",
    "Protocol",
    "Regime",
    "Role",
    "RolloutCreate",
    "ScoreCreate",
    "ScorerKind",
    "TaskStatus",
    "ToolCall",
    "validate_messages",
]
