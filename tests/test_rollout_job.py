"""The rollout job on real Ray with the offline speech policy: exactly once, even when actors die."""

from __future__ import annotations

import pytest
from pipeline_fixtures import kill_actor_mid_job
from pipeline_fixtures import seed_offline as _seed
from sqlalchemy import text

from earmark.audio import decode
from pipelines.rollout_job import RolloutJobConfig, run_rollout_job

pytestmark = pytest.mark.slow


def _counts(em):
    with em.session() as s:
        total = s.scalar(text("SELECT count(*) FROM rollouts"))
        distinct = s.scalar(text("SELECT count(DISTINCT (prompt_id, policy_id, sample_index, round)) FROM rollouts"))
    return total, distinct


def test_rollouts_exactly_once_and_rerun_adds_nothing(committed_em, checkpoint, ray_local) -> None:
    em = committed_em
    _seed(em, checkpoint)
    cfg = RolloutJobConfig(policy="offline-speech", samples=2, actors=2, batch_size=2, max_new_tokens=40)
    res = run_rollout_job(em, cfg, progress=False)
    assert res.planned == 10 and res.actors == 2
    assert _counts(em) == (10, 10)
    again = run_rollout_job(em, cfg, progress=False)
    assert again.planned == 0 and again.skipped_existing == 10
    assert _counts(em) == (10, 10)

    rows = em.rollouts.list()
    # the K samples of one prompt are K draws, not one draw K times
    by_prompt: dict[int, set[str]] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt_id, set()).add(" ".join(map(str, r.token_ids)))
    assert sum(len(v) > 1 for v in by_prompt.values()) >= len(by_prompt) - 1
    for r in rows:
        assert r.text.strip() and r.token_ids and r.audio_sha256
        audio, sr = decode(em.blobs.read(r.audio_sha256))
        assert abs(len(audio) / sr - r.duration_s) < 1e-3  # the blob decodes to the stored duration
        assert r.sampling["max_new_tokens"] == 40 and r.ttfa_s is not None and r.ttfa_s <= r.total_s
    multi = [r for r in rows if r.prompt_id == max(x.prompt_id for x in rows)]
    roles = [m["role"] for m in multi[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant"]  # answered turn by turn
    for m in multi[0].messages:
        if m["role"] == "assistant":
            kinds = {p["type"] for p in m["content"]}
            assert kinds == {"text", "audio", "token"}


def test_killed_actor_mid_job_every_item_exactly_once(committed_em, checkpoint, ray_local) -> None:
    em = committed_em
    _seed(em, checkpoint, n_prompts=6, multi=False)
    cfg = RolloutJobConfig(policy="offline-speech", samples=3, actors=2, batch_size=1, max_new_tokens=48)
    kill_actor_mid_job(
        lambda: run_rollout_job(em, cfg, progress=False), "RolloutActor", lambda: _counts(em)[0] >= 2, poll_s=0.05
    )
    assert _counts(em) == (18, 18)  # every prompt x sample once: no loss, no duplicate
