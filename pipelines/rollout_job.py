"""The rollout job on Ray: a pool of policy actors, K samples per prompt, exactly once into the store.

Exactly once rests on the store, not on Ray: every row has the key (prompt, policy, sample, round)
and the bulk ingest skips keys that exist. So Ray is free to retry a task on a restarted actor
(``max_restarts``/``max_task_retries``), the driver may resubmit a batch whose actor died for good,
and a re-run of the same job computes only the (prompt, sample) pairs still missing.

Actors put the audio in the blob store and hand back the rows; the driver ingests the batches in
plan order (each as soon as every earlier batch is in), so the rows' ids follow the plan, not which
actor finished first: everything that later reads rollouts in id order (campaign pairs, scoring
batches, snapshot rows and so DPO's data order) is the same from run to run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from earmark.config import Settings
from earmark.domain.limits import Limits
from pipelines.rollouts import WorkItem, prompt_conversation

if TYPE_CHECKING:
    from earmark.api import Earmark

log = logging.getLogger(__name__)


class RolloutJobConfig(BaseModel):
    """One rollout job. Recorded nowhere by itself: every row records the policy, round and sampling."""

    policy: str = Field(description="registered policy name")
    policy_version: int | None = Field(default=None, description="version; latest when unset")
    regime: str | None = Field(default=None, description="only prompts of this regime")
    split: str | None = Field(default="train", description="only prompts of this split (train/heldout/test)")
    prompt_ids: list[str] | None = Field(default=None, description="only these prompt external ids")
    samples: int = Field(default=4, ge=1, le=Limits.MAX_SAMPLES_PER_PROMPT, description="K samples per prompt")
    round: int = Field(default=0, ge=0, description="loop round the rollouts belong to")
    actors: int = Field(default=1, ge=1, le=256, description="policy actors in the pool")
    cpus_per_actor: float = Field(default=1.0, gt=0, description="Ray CPUs reserved per actor")
    gpus_per_actor: float = Field(default=0.0, ge=0, description="Ray GPUs per actor (0 on CPU machines)")
    batch_size: int = Field(default=8, ge=1, le=1024, description="trajectories per actor call")
    temperature: float = Field(default=0.9, ge=0, le=5)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    seed: int = Field(default=0, description="job seed: the same plan draws the same samples")
    duplex_decision_temperature: float = Field(
        default=12.0,
        gt=0,
        description="duplex prompts: temperature of each listen/speak/back-channel/stop decision "
        "(1.0 = the policy's own; hotter explores decisions so the K samples of a scenario differ)",
    )
    max_restarts: int = Field(default=3, ge=0, description="Ray restarts of a crashed actor")
    max_task_retries: int = Field(default=3, ge=0, description="Ray retries of a task on a restarted actor")
    resubmits: int = Field(default=2, ge=0, description="driver resubmissions of a batch whose actor died for good")


@dataclass
class RolloutJobResult:
    policy_id: int
    planned: int
    written: int
    skipped_existing: int
    seconds: float
    actors: int
    nodes: list[str] = field(default_factory=list)
    failed_batches: int = 0
    startup_s: float = 0.0  # Ray init + actors loading the policy, before the first batch

    @property
    def samples_per_s(self) -> float:
        return self.planned / self.seconds if self.seconds else 0.0

    @property
    def steady_samples_per_s(self) -> float:
        busy = self.seconds - self.startup_s
        return self.planned / busy if busy > 0 else 0.0


def sampling_params(cfg: RolloutJobConfig):  # noqa: ANN201
    from pipelines.policy.base import SamplingParams

    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)


def plan(em: Earmark, cfg: RolloutJobConfig) -> tuple[Any, list[WorkItem], int]:
    """Policy row, the work still missing, and how many (prompt, sample) pairs already exist."""
    policy = em.catalog.policy(cfg.policy, cfg.policy_version)
    prompts = em.catalog.prompts(regime=cfg.regime, split=cfg.split, external_ids=cfg.prompt_ids)
    cards = em.catalog.persona_cards(p.persona_id for p in prompts if p.persona_id is not None)
    done = em.rollouts.existing_keys(policy.id, cfg.round, [p.id for p in prompts])
    items = [
        WorkItem(
            p.id,
            k,
            prompt_conversation(p.messages, cards.get(p.persona_id) if p.persona_id is not None else None),
            p.regime,
            p.reference if p.regime == "duplex" else None,
        )
        for p in prompts
        for k in range(cfg.samples)
        if (p.id, k) not in done
    ]
    return policy, items, len(done)


def _actor_class():  # noqa: ANN202 - built lazily so importing this module needs no ray
    import ray

    @ray.remote
    class RolloutActor:
        """Thin: loads the policy once, then calls the library functions per batch."""

        def __init__(self, settings: Settings, kind: str, uri: str, options: dict[str, Any]) -> None:
            import torch

            torch.set_num_threads(1)  # one core per actor; N actors scale over N cores
            import earmark
            from pipelines.policy.loader import load_policy

            self.em = earmark.connect(settings, upgrade=False, pool_size=1)
            self.policy = load_policy(kind, uri, **options)

        def run(
            self,
            items: list[WorkItem],
            params: Any,
            policy_id: int,
            round: int,
            job_seed: int,
            duplex: dict[str, Any] | None = None,
        ) -> list[Any]:
            from pipelines import rollouts

            results = rollouts.generate(self.policy, items, params, job_seed=job_seed, round=round, duplex=duplex)
            return rollouts.rollout_rows(self.em, policy_id, round, params, results, vocab=self.policy.name)

        def node(self) -> str:
            return ray.get_runtime_context().get_node_id()

    return RolloutActor


def run_rollout_job(em: Earmark, cfg: RolloutJobConfig, *, progress: bool = True) -> RolloutJobResult:
    import ray

    from pipelines.actor_pool import ActorPool
    from pipelines.progress import progress_bar
    from pipelines.ray_runtime import ensure_ray

    t0 = time.monotonic()
    policy, items, existing = plan(em, cfg)
    if not items:
        return RolloutJobResult(policy.id, 0, 0, existing, time.monotonic() - t0, 0)
    ensure_ray(em.settings)
    settings = em.worker_settings()
    params = sampling_params(cfg)
    n_actors = min(cfg.actors, len(items))
    Actor = _actor_class().options(
        num_cpus=cfg.cpus_per_actor,
        num_gpus=cfg.gpus_per_actor,
        max_restarts=cfg.max_restarts,
        max_task_retries=cfg.max_task_retries,
    )

    def spawn():  # noqa: ANN202
        return Actor.remote(settings, policy.kind, policy.uri, dict(policy.config or {}))

    pool: ActorPool[tuple[int, list[WorkItem]]] = ActorPool(spawn, n_actors)
    nodes = sorted(set(ray.get([a.node.remote() for a in pool.actors])))
    startup_s = time.monotonic() - t0
    batches = [(n, items[i : i + cfg.batch_size]) for n, i in enumerate(range(0, len(items), cfg.batch_size))]
    written = 0
    duplex = {"decision_temperature": cfg.duplex_decision_temperature}
    finished: dict[int, list[Any]] = {}  # batch number -> rows, until every earlier batch is in
    next_batch = 0

    def ingest(upto: int) -> None:
        nonlocal written, next_batch
        while next_batch < upto:
            rows = finished.pop(next_batch, None)
            if rows:  # None: the batch failed for good (reported below)
                written += len(em.rollouts.ingest(rows))
            next_batch += 1

    with progress_bar(total=len(items), desc=f"rollouts {policy.name} v{policy.version}", enabled=progress) as bar:

        def done(batch: tuple[int, list[WorkItem]], rows: list[Any]) -> None:
            finished[batch[0]] = rows
            while next_batch in finished:
                ingest(next_batch + 1)
            bar.update(len(batch[1]))

        failed_batches = pool.run(
            batches,
            lambda actor, b: actor.run.remote(b[1], params, policy.id, cfg.round, cfg.seed, duplex),
            done,
            resubmits=cfg.resubmits,
            raise_on_failure=False,
            # the policy's voice (eSpeak NG) carries synthesis state from clip to clip within a
            # process: batch n on actor n mod N gives every actor the same history on every run
            pinned=True,
        )
        ingest(len(batches))  # the batches after one that failed for good
    pool.kill()
    failed = len(failed_batches)
    result = RolloutJobResult(
        policy.id, len(items), written, existing, time.monotonic() - t0, n_actors, nodes, failed, startup_s
    )
    if failed:
        from earmark.errors import EarmarkError

        raise EarmarkError(
            f"{failed} rollout batch(es) failed after retries; re-run the same job to fill only the missing samples"
        )
    return result
