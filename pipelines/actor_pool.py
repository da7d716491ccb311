"""One Ray actor pool for the rollout and scoring jobs.

Each actor holds two batches (one running, one queued behind it) so it never idles between calls;
results are handed back as they finish, in any order. A batch whose actor died for good (Ray's own
``max_restarts``/``max_task_retries`` spent) is resubmitted on a fresh actor up to ``resubmits``
times; after that it counts as failed, or raises when ``raise_on_failure``. Resubmitting is safe
because both jobs write through idempotent bulk inserts (a key that exists is skipped).

``pinned``: batch n always runs on actor n mod N (in order), instead of on whichever actor frees up
first. For work whose result depends on what the same process did before (eSpeak NG carries its
synthesis state from one utterance to the next), so a run repeats batch for batch.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

B = TypeVar("B")


@dataclass
class _Job(Generic[B]):
    batch: B
    attempt: int = 0


class ActorPool(Generic[B]):
    def __init__(self, spawn: Callable[[], Any], size: int, *, actors: Iterable[Any] = ()) -> None:
        """``spawn()`` starts one actor; ``actors`` are ones kept from an earlier job (reused first)."""
        self._spawn = spawn
        self.actors: list[Any] = list(actors)
        self.actors += [spawn() for _ in range(size - len(self.actors))]

    def run(
        self,
        batches: Iterable[B],
        submit: Callable[[Any, B], Any],
        on_result: Callable[[B, Any], None],
        *,
        resubmits: int = 0,
        raise_on_failure: bool = True,
        pinned: bool = False,
    ) -> list[B]:
        """``submit(actor, batch)`` returns an ObjectRef; ``on_result(batch, value)`` gets each value.
        Returns the batches that failed after every resubmission (empty when ``raise_on_failure``)."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        jobs = [_Job(b) for b in batches]
        if pinned:  # one queue per actor: batch n on actor n mod N
            queues = [deque(jobs[i :: len(self.actors)]) for i in range(len(self.actors))]
        else:  # one queue: each batch on whichever actor frees up first
            queues = [deque(jobs)] * len(self.actors)
        pending: dict[Any, tuple[int, Any, _Job[B]]] = {}
        failed: list[B] = []

        def feed(slot: int) -> None:
            queue = queues[slot]
            if queue:
                job = queue.popleft()
                actor = self.actors[slot]
                pending[submit(actor, job.batch)] = (slot, actor, job)

        for slot in range(len(self.actors)):
            feed(slot)
            feed(slot)  # one queued behind the running batch
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            slot, actor, job = pending.pop(ready[0])
            try:
                value = ray.get(ready[0])
            except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
                if job.attempt >= resubmits:
                    if raise_on_failure:
                        raise
                    log.error("batch failed after %d resubmits: %s", job.attempt, exc)
                    failed.append(job.batch)
                else:
                    log.warning("actor died (%s); resubmitting its batch", type(exc).__name__)
                    queues[slot].appendleft(_Job(job.batch, job.attempt + 1))
                    if actor is self.actors[slot]:  # its queued batch fails too: replace the actor once
                        self.actors[slot] = self._spawn()
            else:
                on_result(job.batch, value)
            feed(slot)
        return failed

    def kill(self) -> None:
        import ray

        for a in self.actors:
            if ray.is_initialized():
                ray.kill(a)
        self.actors = []
