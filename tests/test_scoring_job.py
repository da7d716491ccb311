"""The scoring job on real Ray over real rollouts: only missing scores, new versions add rows."""

from __future__ import annotations

import pytest
from pipeline_fixtures import kill_actor_mid_job, seed_offline
from sqlalchemy import text

from pipelines.rollout_job import RolloutJobConfig, run_rollout_job
from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, balanced_batches, run_scoring_job

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "n, batch_size, actors", [(24, 16, 2), (120, 16, 2), (7, 16, 2), (1, 16, 2), (3, 1, 2), (10, 3, 4), (0, 8, 2)]
)
def test_balanced_batches_every_actor_the_same_share(n: int, batch_size: int, actors: int) -> None:
    ids = list(range(100, 100 + n))
    batches = balanced_batches(ids, batch_size, actors)
    assert sorted(i for b in batches for i in b) == ids  # each id once
    assert all(0 < len(b) <= batch_size for b in batches)
    if batches:
        assert max(map(len, batches)) - min(map(len, batches)) <= 1
        assert len(batches) % actors == 0 or len(batches) == n  # as many batches per actor
    assert [len(b) for b in balanced_batches(list(range(24)), 16, 2)] == [12, 12]


def test_scoring_job_scores_missing_only_and_keeps_versions(committed_em, checkpoint, ray_local) -> None:
    em = committed_em
    seed_offline(em, checkpoint, n_prompts=3, multi=False)
    run_rollout_job(
        em, RolloutJobConfig(policy="offline-speech", samples=2, actors=1, max_new_tokens=32), progress=False
    )
    cfg = ScoringJobConfig(scorers=[ScorerSpec(name="prosody")], actors=2, batch_size=2)
    res = run_scoring_job(em, cfg, progress=False)
    assert res.rollouts == 6 and sum(res.per_scorer.values()) == 6
    assert run_scoring_job(em, cfg, progress=False).rollouts == 0  # nothing missing: nothing done
    # a new scorer config is a new version: rows are added beside the old ones, never overwritten
    cfg2 = ScoringJobConfig(scorers=[ScorerSpec(name="prosody", config={"use_transcript_for_rate": False})])
    res2 = run_scoring_job(em, cfg2, progress=False, use_ray=False)
    assert res2.rollouts == 6
    with em.session() as s:
        rows = s.execute(
            text(
                "SELECT rm.version, count(*), min(rs.score), max(rs.score), "
                "bool_and(rs.rationale IS NOT NULL), bool_and(rs.features ? 'f0_mean_hz') "
                "FROM reward_scores rs JOIN reward_models rm ON rm.id = rs.reward_model_id "
                "GROUP BY rm.version"
            )
        ).all()
    assert len(rows) == 2 and all(r[1] == 6 for r in rows)
    assert all(0.0 <= r[2] <= r[3] <= 1.0 and r[4] and r[5] for r in rows)


def test_kept_actors_serve_the_next_job_and_are_released(committed_em, checkpoint, ray_local) -> None:
    import ray

    from pipelines import scoring_job

    em = committed_em
    seed_offline(em, checkpoint, n_prompts=2, multi=False)
    run_rollout_job(
        em, RolloutJobConfig(policy="offline-speech", samples=2, actors=1, max_new_tokens=24, round=0), progress=False
    )
    cfg = ScoringJobConfig(scorers=[ScorerSpec(name="prosody")], actors=1, batch_size=2, keep_actors=True, rounds=[0])
    assert run_scoring_job(em, cfg, progress=False).rollouts == 4
    (pool,) = scoring_job._POOLS.values()
    first = [a._actor_id.hex() for a in pool]
    run_rollout_job(
        em, RolloutJobConfig(policy="offline-speech", samples=2, actors=1, max_new_tokens=24, round=1), progress=False
    )
    res = run_scoring_job(em, cfg.model_copy(update={"rounds": [1]}), progress=False)
    assert res.rollouts == 4 and sum(res.per_scorer.values()) == 4
    (pool,) = scoring_job._POOLS.values()
    assert [a._actor_id.hex() for a in pool] == first  # the same actor scored the second job
    assert scoring_job.release_actors() == 1 and not scoring_job._POOLS
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(pool[0].run.remote([]), timeout=60)


def _score_counts(em) -> tuple[int, int]:
    with em.session() as s:
        return tuple(
            s.execute(
                text("SELECT count(*), count(DISTINCT (rollout_id, reward_model_id, dimension)) FROM reward_scores")
            ).one()
        )


def test_killed_scoring_actor_mid_job_every_rollout_scored_once(committed_em, checkpoint, ray_local) -> None:
    """A scoring actor SIGKILLed after some scores landed: Ray restarts it, retries its batches, and
    every rollout ends with exactly one score per dimension (retried inserts of stored rows add nothing)."""
    em = committed_em
    seed_offline(em, checkpoint, n_prompts=6, multi=False)
    run_rollout_job(
        em, RolloutJobConfig(policy="offline-speech", samples=4, actors=1, max_new_tokens=48), progress=False
    )
    n = len(em.rollouts.list())
    assert n == 24
    cfg = ScoringJobConfig(scorers=[ScorerSpec(name="prosody")], actors=2, batch_size=1)
    kill_actor_mid_job(
        lambda: run_scoring_job(em, cfg, progress=False), "ScoringActor", lambda: _score_counts(em)[0] >= 1, poll_s=0.01
    )
    total, distinct = _score_counts(em)
    assert total == distinct == n  # prosody has one dimension: no rollout lost, none scored twice
    assert run_scoring_job(em, cfg, progress=False).rollouts == 0  # nothing left missing
