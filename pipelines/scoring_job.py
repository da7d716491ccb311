"""The scoring job on Ray: every rollout missing a score for a scorer version gets one, exactly once.

Each scorer version is a `reward_models` row (name, version = code + config hash, kind, dimensions);
re-scoring with a new version adds rows beside the old ones. Actors are thin: they build the scorers
once, fetch their batch's contexts and audio from the store, score, and bulk-insert (ON CONFLICT DO
NOTHING keeps retries harmless). Only rollout ids travel through Ray.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from earmark.domain.records import RewardModelCreate

if TYPE_CHECKING:
    from earmark.api import Earmark

log = logging.getLogger(__name__)


class ScorerSpec(BaseModel):
    name: str = Field(description="registered scorer name (reward_models.base.list_scorers())")
    config: dict[str, Any] = Field(default_factory=dict)


class ScoringJobConfig(BaseModel):
    scorers: list[ScorerSpec]
    policy_id: int | None = Field(default=None, description="only rollouts of this policy version")
    rounds: list[int] | None = None
    regimes: list[str] | None = Field(default=None, description="only rollouts of prompts in these regimes")
    actors: int = Field(default=1, ge=1, le=256)
    cpus_per_actor: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=16, ge=1, le=4096)
    max_restarts: int = Field(default=3, ge=0)
    max_task_retries: int = Field(default=3, ge=0)
    keep_actors: bool = Field(
        default=False,
        description="keep the actors (scorers and models loaded) for later jobs "
        "of this driver with the same scorers; release them with release_actors()",
    )


@dataclass
class ScoringJobResult:
    per_scorer: dict[str, int] = field(default_factory=dict)  # rows added per scorer version
    rollouts: int = 0
    seconds: float = 0.0


def scoring_inputs(em: Earmark, rollout_ids: list[int]) -> list[Any]:
    """Store rows -> ScoringInput, audio decoded from the blob store."""
    from earmark.audio import decode
    from reward_models.base import ScoringInput

    items = []
    contexts = em.scores.rollout_contexts(rollout_ids)
    # Duplex rollouts are scored on their session timeline (turn-taking, tool calls on the action channel).
    duplex = [c["rollout_id"] for c in contexts if c.get("regime") == "duplex" and "timeline" not in c]
    timelines = em.timelines.rollout_timelines(duplex) if duplex else {}
    for ctx in contexts:
        if ctx["rollout_id"] in timelines:
            ctx["timeline"] = timelines[ctx["rollout_id"]]
        sha = ctx.pop("audio_sha256")
        audio, sr = decode(em.blobs.read(sha)) if sha else (None, None)
        items.append(ScoringInput(**ctx, audio=audio, sample_rate=sr))
    return items


def score_and_store(em: Earmark, scorers: list[tuple[Any, int]], rollout_ids: list[int]) -> dict[str, int]:
    """Score a batch with every (scorer, reward_model_id) and bulk-insert; returns rows added per scorer."""
    items = scoring_inputs(em, rollout_ids)
    added = {}
    for scorer, rm_id in scorers:
        results = scorer.score_batch(items)
        rows = [
            (item.rollout_id, rm_id, r.dimension, float(r.score), r.rationale[:4000] or None, r.features or None)
            for item, res in zip(items, results, strict=True)
            for r in res
        ]
        added[f"{scorer.name}@{scorer.version}"] = em.scores.ingest(rows)
    return added


def register(em: Earmark, specs: list[ScorerSpec]) -> list[tuple[Any, int]]:
    from reward_models.base import build_scorer

    out = []
    for spec in specs:
        scorer = build_scorer(spec.name, **spec.config)
        row = em.scores.register_reward_model(
            RewardModelCreate(
                name=scorer.name,
                version=scorer.version,
                kind=scorer.kind,
                dimensions=list(scorer.dimensions),
                config=scorer.config,
            )
        )
        out.append((scorer, row.id))
    return out


def _actor_class():  # noqa: ANN202
    import ray

    @ray.remote
    class ScoringActor:
        def __init__(self, settings: Any, specs: list[ScorerSpec]) -> None:
            import torch

            torch.set_num_threads(1)
            import earmark

            self.em = earmark.connect(settings, upgrade=False, pool_size=1)
            self.scorers = register(self.em, specs)

        def run(self, rollout_ids: list[int]) -> dict[str, int]:
            return score_and_store(self.em, self.scorers, rollout_ids)

    return ScoringActor


# Kept actor pools of this driver process, keyed by what the actors were built with. A loop that
# scores every round (the demo, online DPO) would otherwise pay actor start-up and model loading
# (Whisper, judges) in every job: ~25 s of a 45 s job on 2 cores.
_POOLS: dict[str, list[Any]] = {}


def _pool_key(cfg: ScoringJobConfig, settings: Any) -> str:
    import json

    return json.dumps(
        [
            [s.model_dump() for s in cfg.scorers],
            cfg.cpus_per_actor,
            cfg.max_restarts,
            settings.database_url.get_secret_value() if settings.database_url else None,
            str(settings.blob_url),
        ],
        sort_keys=True,
        default=str,
    )


def release_actors() -> int:
    """Kill every kept scoring actor of this process; returns how many."""
    import ray

    n = 0
    for actors in _POOLS.values():
        for a in actors:
            if ray.is_initialized():
                ray.kill(a)
            n += 1
    _POOLS.clear()
    return n


def balanced_batches(ids: list[int], batch_size: int, actors: int) -> list[list[int]]:
    """At most ``batch_size`` ids a batch, as many batches as a multiple of ``actors`` (every actor
    gets the same number), sizes within one of each other, and each batch drawn across the list
    (ids of one prompt are neighbours; mixed prompts spread long and short clips over the batches).
    24 ids, batch_size 16, 2 actors: 12 + 12, not 16 + 8 (one actor idle for half the job)."""
    if not ids:
        return []
    n = -(-len(ids) // batch_size)
    n = min(len(ids), -(-n // actors) * actors)
    return [ids[k::n] for k in range(n)]


def run_scoring_job(
    em: Earmark, cfg: ScoringJobConfig, *, progress: bool = True, use_ray: bool = True
) -> ScoringJobResult:
    from pipelines.progress import progress_bar

    t0 = time.monotonic()
    scorers = register(em, cfg.scorers)
    todo = sorted(
        {
            rid
            for scorer, rm_id in scorers
            for rid in em.scores.unscored(
                rm_id, scorer.dimensions, policy_id=cfg.policy_id, rounds=cfg.rounds, regimes=cfg.regimes
            )
        }
    )
    result = ScoringJobResult(rollouts=len(todo))
    if not todo:
        result.seconds = time.monotonic() - t0
        return result
    batches = deque(balanced_batches(todo, cfg.batch_size, 1 if not use_ray else cfg.actors))
    label = ", ".join(s.name for s, _ in scorers)

    def merge(added: dict[str, int]) -> None:
        for k, v in added.items():
            result.per_scorer[k] = result.per_scorer.get(k, 0) + v

    with progress_bar(total=len(todo), desc=f"scoring [{label}]", enabled=progress, unit="rollout") as bar:
        if not use_ray:
            while batches:
                b = batches.popleft()
                merge(score_and_store(em, scorers, b))
                bar.update(len(b))
        else:
            from pipelines.actor_pool import ActorPool
            from pipelines.ray_runtime import ensure_ray

            ensure_ray(em.settings)
            settings = em.worker_settings()
            Actor = _actor_class().options(
                num_cpus=cfg.cpus_per_actor, max_restarts=cfg.max_restarts, max_task_retries=cfg.max_task_retries
            )
            key = _pool_key(cfg, settings) if cfg.keep_actors else None
            pool: ActorPool[list[int]] = ActorPool(
                lambda: Actor.remote(settings, cfg.scorers),
                min(cfg.actors, len(batches)),
                actors=_POOLS.get(key, []) if key else [],
            )

            def done(b: list[int], added: dict[str, int]) -> None:
                merge(added)
                bar.update(len(b))

            # Ray retries a task on a restarted actor; a final failure raises.
            # batch n on actor n mod N: a scorer that samples (Whisper's temperature fallback) draws
            # from its process's generator, so each actor's sequence of batches must repeat per run
            pool.run(batches, lambda actor, b: actor.run.remote(b), done, pinned=True)
            if key:
                _POOLS[key] = pool.actors
            else:
                pool.kill()
    result.seconds = time.monotonic() - t0
    return result
