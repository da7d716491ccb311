from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    rater = "rater"
    reviewer = "reviewer"
    admin = "admin"
    engineer = "engineer"  # API/CLI principal: pipelines, no annotation UI pages


class Regime(StrEnum):
    asr = "asr"
    tts = "tts"
    realtime = "realtime"
    duplex = "duplex"
    reasoning = "reasoning"


class ScorerKind(StrEnum):
    acoustic = "acoustic"
    verifiable = "verifiable"
    generative = "generative"
    learned = "learned"
    human = "human"


class Protocol(StrEnum):
    pairwise = "pairwise"
    mos = "mos"
    cmos = "cmos"
    mushra = "mushra"
    timeline = "timeline"


class CampaignStatus(StrEnum):
    draft = "draft"
    open = "open"
    closed = "closed"


class TaskStatus(StrEnum):
    open = "open"
    leased = "leased"
    done = "done"


class JobStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
