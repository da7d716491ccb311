"""Simulated raters: load tests, the offline demo and benchmarks drive the real task services.

A simulated rater claims, sometimes abandons (skips, or walks away and lets the lease lapse), and
submits an answer produced by an ``oracle`` (for the demo: a noisy reading of what a human would
hear; for load tests: random). Every call goes through ``TaskService`` exactly as the app's would.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from earmark.errors import Conflict, LeaseExpired, StoreUnavailable
from earmark.services.tasks import RaterItem

Oracle = Callable[[RaterItem, random.Random], dict[str, Any]]
DIMENSION_RATINGS = {"prosody": 3, "persona_consistency": 3, "correctness": 3}


def random_oracle(item: RaterItem, rng: random.Random) -> dict[str, Any]:
    ratings = {d: rng.randint(1, 5) for d in item.dimensions if d in DIMENSION_RATINGS}
    base: dict[str, Any] = {
        "ratings": ratings,
        "rationale": "simulated",
        "listen_ms": {st.label: int(1000 * (st.duration_s or 1.0)) for st in item.stimuli},
    }
    if item.protocol == "pairwise":
        base |= {"choice": rng.choice(["A", "B", "A", "B", "tie"]), "strength": rng.randint(1, 3)}
    elif item.protocol == "cmos":
        base["cmos"] = rng.randint(-3, 3)
    elif item.protocol == "mos":
        base["mos"] = [rng.randint(1, 5) for _ in item.stimuli]
    elif item.protocol == "mushra":
        base["mushra"] = [rng.randint(0, 100) for _ in item.stimuli]
    return base


@dataclass
class RaterStats:
    submitted: int = 0
    duplicates: int = 0
    refused_late: int = 0
    abandoned: int = 0
    walked_away: int = 0
    store_errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # claim + submit, per completed item
    # (task, claim returned, release/submit called): strictly inside the true hold, so two overlapping
    # spans of one task prove a double claim (no false positives from thread scheduling)
    holds: list[tuple[int, float, float]] = field(default_factory=list)


def run_rater(
    em: Any,
    campaign_id: int,
    *,
    oracle: Oracle = random_oracle,
    seed: int = 0,
    p_skip: float = 0.0,
    p_walk_away: float = 0.0,
    p_double_submit: float = 0.0,
    max_items: int = 10_000,
    stop: threading.Event | None = None,
    idle_wait_s: float = 0.0,
    deadline_s: float = 120.0,
    think_s: float = 0.0,
    start_spread_s: float = 0.0,
) -> RaterStats:
    """One rater's session until the pool is empty (or ``stop`` is set). ``start_spread_s``: the
    rater arrives at a random moment within it (people do not all click "start" in one instant)."""
    rng = random.Random(seed)
    stats = RaterStats()
    if start_spread_s:
        time.sleep(rng.uniform(0, start_spread_s))
    t_end = time.monotonic() + deadline_s
    while stats.submitted < max_items and time.monotonic() < t_end and not (stop and stop.is_set()):
        t0 = time.perf_counter()
        try:
            leases = em.tasks.claim(campaign_id, want=1)
        except StoreUnavailable:
            stats.store_errors += 1
            continue
        if not leases:
            if idle_wait_s <= 0 or em.campaigns.progress(campaign_id).complete:
                break
            time.sleep(idle_wait_s)  # lapsed leases of walked-away raters come back; keep polling
            continue
        lease = leases[0]
        t_claim = time.perf_counter() - t0
        roll = rng.random()
        if roll < p_skip:
            stats.holds.append((lease.task_id, t0 + t_claim, time.perf_counter()))
            em.tasks.release(lease.task_id, lease.lease_token)
            stats.abandoned += 1
            continue
        if roll < p_skip + p_walk_away:
            stats.walked_away += 1  # the tab closes: only the lease's expiry returns the task to the pool
            continue
        answer = oracle(em.tasks.item(lease), rng)
        if think_s:
            time.sleep(rng.uniform(0.5, 1.5) * think_s)  # listening and deciding
        sub_id = uuid.uuid4()
        t1 = time.perf_counter()
        try:
            res = em.tasks.submit(lease.task_id, lease.lease_token, sub_id, answer)
            if rng.random() < p_double_submit:
                again = em.tasks.submit(lease.task_id, lease.lease_token, sub_id, answer)
                stats.duplicates += int(again.duplicate)
        except (LeaseExpired, Conflict):
            stats.refused_late += 1
            continue
        except StoreUnavailable:
            stats.store_errors += 1
            continue
        stats.latencies_ms.append(1000 * (t_claim + time.perf_counter() - t1))
        stats.holds.append((lease.task_id, t0 + t_claim, t1))
        stats.submitted += int(not res.duplicate)
    return stats


def run_raters(ems: list[Any], campaign_id: int, **kwargs: Any) -> list[RaterStats]:
    """Run one thread per rater (each ``em`` is bound to its own principal)."""
    results: list[RaterStats | None] = [None] * len(ems)
    base_seed = kwargs.pop("seed", 0)

    def target(i: int) -> None:
        results[i] = run_rater(ems[i], campaign_id, seed=base_seed + i, **kwargs)

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(ems))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r or RaterStats() for r in results]


def double_claims(stats: list[RaterStats]) -> int:
    """Tasks held by two raters at once (claim intervals that overlap). Must be 0."""
    by_task: dict[int, list[tuple[float, float]]] = {}
    for st in stats:
        for task, start, end in st.holds:
            by_task.setdefault(task, []).append((start, end))
    overlaps = 0
    for spans in by_task.values():
        spans.sort()
        overlaps += sum(1 for (_s0, e0), (s1, _e1) in zip(spans, spans[1:]) if s1 < e0)
    return overlaps
