"""What a rollout job hands a policy runner: one work item per (prompt, sample_index) trajectory, the
per-trajectory seed, and the result shape. Shared by the text/speech loop (pipelines.rollouts) and
duplex sessions (pipelines.duplex.rollouts) without either importing the other's module."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.policy.base import GeneratedSample


@dataclass
class WorkItem:
    prompt_id: int
    sample_index: int
    messages: list[dict[str, Any]]  # prompt conversation (persona system message included)
    regime: str | None = None  # "duplex" items run as duplex sessions (pipelines.duplex)
    reference: dict[str, Any] | None = None  # duplex: the scenario timeline the session steps through


def derive_seed(job_seed: int, round: int, prompt_id: int, sample_index: int, turn: int) -> int:
    """A per-trajectory seed: the same work item draws the same sample however it is batched."""
    h = hashlib.blake2b(f"{job_seed}:{round}:{prompt_id}:{sample_index}:{turn}".encode(), digest_size=4)
    return int.from_bytes(h.digest(), "little")


Result = tuple[WorkItem, list["GeneratedSample"], int]  # (item, one sample per generated turn, seed)
