"""Bradley-Terry reward model trained on human judgments from the store, evaluated against humans."""

from __future__ import annotations

import pytest
from pipeline_fixtures import seed_offline

from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.services.datasets import SnapshotFilters
from pipelines.demo import simulate_raters
from pipelines.rollout_job import RolloutJobConfig, run_rollout_job
from pipelines.train_rm import train_from_snapshot

pytestmark = pytest.mark.slow


def test_bt_on_human_labels_from_store(committed_em, checkpoint, ray_local, tmp_path) -> None:
    em = committed_em
    seed_offline(em, checkpoint, n_prompts=6, multi=False)
    run_rollout_job(
        em,
        RolloutJobConfig(policy="offline-speech", samples=4, actors=2, max_new_tokens=40, temperature=1.2),
        progress=False,
    )
    admin = em.as_principal(Principal(None, "admin", Role.admin))
    admin.users.ensure("admin", "admin-password", Role.admin)
    camp = admin.campaigns.create(CampaignCreate(name="bt", overlap=1, gold_ratio=0.0, max_items=36))
    targets = {"Mara": {"f0_mean_hz": 85.0, "rate_wps": 2.3}}
    n = simulate_raters(em, camp.id, targets, quota=36, seed=3)
    assert n >= 20
    ds = admin.datasets.build("bt", SnapshotFilters(campaign_ids=[camp.id]))
    out = train_from_snapshot(admin, ds, tmp_path / "bt")
    assert out["pairs"] == ds.row_count and out["train_accuracy"] > 0.6
    assert 0.0 <= out["heldout_accuracy"] <= 1.0
    # the trained head is a registered scorer whose scores carry its version
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    res = run_scoring_job(
        em,
        ScoringJobConfig(scorers=[ScorerSpec(name="bt_reward", config={"checkpoint": out["folder"]})]),
        progress=False,
        use_ray=False,
    )
    assert res.rollouts == 24
    pairs = em.scores.human_pairs([camp.id])
    assert len(pairs) == n
