"""Online DPO with fresh human labels, end to end on a committed store and a local Ray: real
rollouts of the offline policy, real prosody scores, a real campaign, rater principals claiming
and submitting through TaskService in threads while the round waits, DPO, the next version.
"""

from __future__ import annotations

import random
import threading
import time
import uuid

import pytest
from pipeline_fixtures import seed_offline
from sqlalchemy import select
from typer.testing import CliRunner

from earmark.domain.enums import Role
from earmark.errors import Conflict, LeaseExpired
from earmark.security import Principal
from earmark.services.training import TrainingService
from earmark.simulate import random_oracle
from earmark.store.models import Judgment
from pipelines.online_dpo import OnlineCampaign, OnlineDPOConfig, run_online_dpo_round

PROMPTS = ["q0", "q1", "q2"]
QUOTA = 3
TIMEOUT_S = 120.0  # case (a) must finish far below this


def config(**over) -> OnlineDPOConfig:
    base = dict(
        policy="offline-speech",
        split=None,
        prompt_ids=PROMPTS,
        samples=3,
        actors=1,
        poll_s=0.3,
        temperature=1.2,
        campaign=OnlineCampaign(overlap=1, gold_ratio=0.0, max_items=6),
        dpo={"threads": 1, "epochs": 2, "batch_size": 4},
    )
    return OnlineDPOConfig(**{**base, **over})


def raters(em, n: int) -> list:
    admin = em.as_principal(Principal(None, "test-admin", Role.admin))
    out = []
    for i in range(n):
        info = admin.users.ensure(f"online-rater-{i}", f"online-rater-pass-{i}", Role.rater)
        out.append(em.as_principal(Principal(info.id, info.username, info.role)))
    return out


def rate_until_closed(em, campaign_id: int, seed: int, stop: threading.Event, submitted: list) -> None:
    """A person at the app: claim, listen (a short pause), prefer A or B, submit; until the campaign
    closes (claims refused) or the pool is empty."""
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            leases = em.tasks.claim(campaign_id, want=1)
        except Conflict:  # the round closed the campaign
            return
        if not leases:
            return
        answer = random_oracle(em.tasks.item(leases[0]), rng) | {"choice": rng.choice("AB"), "strength": 2}
        time.sleep(0.4)
        try:
            res = em.tasks.submit(leases[0].task_id, leases[0].lease_token, uuid.uuid4(), answer)
        except (LeaseExpired, Conflict):
            continue
        submitted.append((res.judgment_id, time.monotonic()))


def judgments_until(em, campaign_id: int, cutoff) -> set[int]:
    return set(
        em.ctx.tx(
            lambda s: s.scalars(
                select(Judgment.id).where(Judgment.campaign_id == campaign_id, Judgment.created_at <= cutoff)
            ).all()
        )
    )


def test_cutoff_keeps_later_judgments_out_of_the_labels(committed_em) -> None:
    """The round's cut-off: a judgment stamped after it counts as unjudged (AI may fill its pair),
    so a rebuild after late judgments gives the same rows."""
    from annotation_fixtures import make_user, seed_rollouts

    from earmark.domain.records import RewardModelCreate, ScoreCreate
    from earmark.services.campaigns import CampaignCreate
    from earmark.services.datasets import SnapshotFilters
    from earmark.services.labels import LabelConfig

    em = committed_em
    data = seed_rollouts(em, n_prompts=3, k=2)
    rm = em.scores.register_reward_model(RewardModelCreate(name="prosody", version="1", kind="acoustic"))
    em.scores.ingest(
        [
            ScoreCreate(rollout_id=rid, reward_model_id=rm.id, dimension="prosody_match", score=0.2 + 0.3 * key[2])
            for key, rid in data["rollouts"].items()
        ]
    )
    camp = em.campaigns.create(CampaignCreate(name="cutoff", overlap=1, gold_ratio=0.0, max_items=3))
    rater = em.as_principal(make_user(em, "cutoff-rater"))
    rng = random.Random(0)

    def judge() -> int:
        lease = rater.tasks.claim(camp.id, want=1)[0]
        answer = random_oracle(rater.tasks.item(lease), rng) | {"choice": "A", "strength": 2}
        return rater.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), answer).judgment_id

    early = {judge(), judge()}
    cutoff, n = em.campaigns.judgment_count(camp.id)
    late = judge()
    assert n == 2 and em.campaigns.judgment_count(camp.id, until=cutoff)[1] == 2
    assert em.campaigns.judgment_count(camp.id)[1] == 3
    labels = LabelConfig(ai_fill=True, ai_reward_model_ids=[rm.id], ai_min_gap=0.0, judged_before=cutoff)
    rows, counts = em.datasets.rows(SnapshotFilters(campaign_ids=[camp.id], labels=labels))
    human = [r for r in rows if r["label_source"] == "human"]
    assert {j for r in human for j in r["judgment_ids"]} == early and late not in {
        j for r in rows for j in r["judgment_ids"]
    }
    assert counts["human"] == 2 and counts["ai"] == 1  # the late-judged pair is filled by AI, marked so
    everything, _ = em.datasets.rows(
        SnapshotFilters(campaign_ids=[camp.id], labels=labels.model_copy(update={"judged_before": None}))
    )
    assert sum(r["label_source"] == "human" for r in everything) == 3


def test_config_refuses_bad_dpo_overrides_before_any_work() -> None:
    with pytest.raises(ValueError, match="dpo overrides.*batch_size"):
        OnlineDPOConfig(policy="p", dpo={"batch_size": 6, "grad_accum": 4})
    with pytest.raises(ValueError, match="samples"):
        OnlineDPOConfig(policy="p", samples=1)


def test_round_proceeds_when_human_quota_is_met(committed_em, checkpoint, ray_local) -> None:
    em = committed_em
    base = seed_offline(em, checkpoint, n_prompts=3, multi=False)
    people = raters(em, 2)
    stop, submitted, threads = threading.Event(), [], []
    waits: list = []

    def start_raters(camp, quota) -> None:  # runs once the campaign is open; the people work while the round waits
        for i, r in enumerate(people):
            t = threading.Thread(target=rate_until_closed, args=(r, camp.id, i, stop, submitted), daemon=True)
            t.start()
            threads.append(t)

    t0 = time.monotonic()
    try:
        res = run_online_dpo_round(
            em,
            config(quota=QUOTA, timeout_s=TIMEOUT_S),
            on_campaign=start_raters,
            on_progress=lambda ev: ev.stage == "waiting" and waits.append(ev.data),
            show=False,
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    print(
        f"\nonline DPO (quota): {res.judgments} judgments in {res.waited_s:.1f}s of wait, labels {res.label_counts}, "
        f"{res.seconds}; total {time.monotonic() - t0:.0f}s"
    )
    # proceeded as soon as the quota was in, far from the timeout, and polled (no spinning)
    assert res.quota_met and not res.timed_out and res.quota == QUOTA
    assert res.judgments >= QUOTA and res.waited_s < 30
    assert 2 <= len(waits) <= res.waited_s / 0.3 + 2 and waits[-1]["judgments"] >= QUOTA
    assert res.campaign_status == "closed"  # default: nobody spends time on pairs no round trains on
    # the human labels are exactly the judgments made by the cut-off, all by the rater threads
    before = judgments_until(em, res.campaign_id, res.cutoff)
    assert len(before) == res.judgments and before <= {j for j, _ in submitted}
    ds = em.datasets.get(res.dataset_name, res.dataset_version)
    rows = em.datasets.load(ds).to_pylist()
    human = [r for r in rows if r["label_source"] == "human"]
    assert {j for r in human for j in r["judgment_ids"]} == before
    assert res.label_counts["human"] == len(human) == res.judgments  # overlap 1, no ties: one label each
    assert all(r["label_source"] == "ai" and not r["judgment_ids"] for r in rows if r not in human)
    assert ds.filters["labels"]["judged_before"] is not None and ds.content_sha256 == res.snapshot_sha256
    # a new version, parented on the old one, trained on that snapshot
    assert res.policy.version == base.version + 1 and res.policy.parent_id == base.id
    run = TrainingService(em.ctx).get(res.training_run_id)
    assert run.status == "succeeded" and run.dataset_id == res.dataset_id == ds.id
    assert run.base_policy_id == base.id and run.output_policy_id == res.policy.id
    assert em.catalog.policy("offline-speech", res.policy.version).training_run_id == run.id


def test_round_times_out_and_trains_on_ai_labels_marked_ai(committed_em, checkpoint, ray_local) -> None:
    em = committed_em
    base = seed_offline(em, checkpoint, n_prompts=3, multi=False)
    timeout = 3.0
    res = run_online_dpo_round(
        em, config(quota=QUOTA, timeout_s=timeout, poll_s=0.5, close_campaign="on_timeout"), show=True
    )
    print(f"\nonline DPO (timeout): waited {res.waited_s:.1f}s, labels {res.label_counts}, {res.seconds}")
    assert res.timed_out and not res.quota_met and res.judgments == 0
    assert timeout <= res.waited_s < timeout + 3
    assert res.label_counts["human"] == res.label_counts["adjudicated"] == 0 and res.label_counts["ai"] > 0
    rows = em.datasets.load(em.datasets.get(res.dataset_name, res.dataset_version)).to_pylist()
    assert rows and all(r["label_source"] == "ai" and r["comparison_id"] is None for r in rows)
    assert res.campaign_status == "closed" and em.campaigns.get(res.campaign_id).status == "closed"
    assert res.policy.version == base.version + 1 and res.policy.parent_id == base.id
    assert TrainingService(em.ctx).get(res.training_run_id).dataset_id == res.dataset_id


@pytest.fixture
def cli_env(committed_em, monkeypatch):
    s = committed_em.settings
    monkeypatch.setenv("EARMARK_HOME", str(s.home))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("EARMARK_DATABASE_URL", s.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_BLOB_URL", s.blob_url)
    return committed_em


def test_no_judgments_and_no_ai_fill_fails_clearly_and_trains_nothing(cli_env, checkpoint, ray_local) -> None:
    """Through the CLI: the campaign is announced, nobody judges, the round refuses to train."""
    from earmark.cli.train_cmds import train_app

    em = cli_env
    seed_offline(em, checkpoint, n_prompts=3, multi=False)
    res = CliRunner().invoke(
        train_app,
        [
            "online-dpo",
            "--policy",
            "offline-speech",
            "--samples",
            "3",
            "--prompts",
            ",".join(PROMPTS),
            "--actors",
            "1",
            "--quota",
            "2",
            "--timeout",
            "1",
            "--poll",
            "0.5",
            "--no-ai-fill",
            "--overlap",
            "1",
            "--gold-ratio",
            "0",
            "--threads",
            "1",
        ],
    )
    print(res.output)
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "is open: judge it in the annotation app" in out
    assert "(no_labels)" in out and "nobody judged campaign" in out and "ai_fill is off" in out
    assert "--no-ai-fill" in out and "nothing was trained" in out
    assert TrainingService(em.ctx).runs() == [] and [p.version for p in em.catalog.policies()] == [0]
    assert em.campaigns.list(status="closed")  # the round still closed what it opened
