"""The preference store on real PostgreSQL (the machine's server and the embedded pgserver)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from earmark.domain.records import RewardModelCreate, RolloutCreate, ScoreCreate
from earmark.errors import InvalidInput
from earmark.store.models import Policy, Prompt, RewardModel, RewardScore, Rollout


def _seed(em):
    em.catalog.import_personas([{"name": "librarian", "prosody": {"f0_mean_hz": 95}}])
    rep = em.catalog.import_prompts(
        [
            {
                "external_id": f"p{i}",
                "regime": "realtime",
                "persona": "librarian",
                "messages": [{"role": "user", "content": f"question {i}"}],
            }
            for i in range(3)
        ]
    )
    pol = em.catalog.register_policy("speech", "file:///ckpt/v0")
    return rep.ids, pol


def _rollouts(prompt_ids, policy_id, k=2, round=0):
    return [
        RolloutCreate(
            prompt_id=pid,
            policy_id=policy_id,
            round=round,
            sample_index=i,
            messages=[{"role": "assistant", "content": f"answer {i}"}],
            text=f"answer {i}",
            token_ids=[1, 2, 3 + i],
            sampling={"temperature": 0.8},
            seed=7,
        )
        for pid in prompt_ids
        for i in range(k)
    ]


def test_rollouts_exactly_once_and_provenance(any_em) -> None:
    ids, pol = _seed(any_em)
    keys = any_em.rollouts.ingest(_rollouts(ids.values(), pol.id))
    assert len(keys) == 6
    again = any_em.rollouts.ingest(_rollouts(ids.values(), pol.id))  # a retried job re-sends everything
    assert again == keys
    assert any_em.rollouts.count() == 6
    with any_em.session() as s:
        row = s.execute(
            select(Rollout, Policy.name, Policy.version, Prompt.external_id).join(Policy).join(Prompt).limit(1)
        ).one()
        assert row.name == "speech" and row.version == 0 and row.external_id.startswith("p")
        assert row.Rollout.token_ids[:2] == [1, 2] and row.Rollout.sampling == {"temperature": 0.8}


def test_scores_unique_and_rescore_with_new_version_adds_rows(any_em) -> None:
    ids, pol = _seed(any_em)
    keys = any_em.rollouts.ingest(_rollouts(ids.values(), pol.id, k=1))
    rm1 = any_em.scores.register_reward_model(RewardModelCreate(name="prosody", version="1+aaa", kind="acoustic"))
    rm2 = any_em.scores.register_reward_model(RewardModelCreate(name="prosody", version="2+bbb", kind="acoustic"))
    assert (
        any_em.scores.register_reward_model(RewardModelCreate(name="prosody", version="1+aaa", kind="acoustic")).id
        == rm1.id
    )
    scores = [
        ScoreCreate(
            rollout_id=r,
            reward_model_id=rm1.id,
            dimension="prosody",
            score=0.5,
            rationale="f0 ok",
            features={"f0_mean_hz": 101.0},
        )
        for r in keys.values()
    ]
    assert any_em.scores.ingest(scores) == 3
    assert any_em.scores.ingest(scores) == 0  # duplicates skipped, not doubled
    assert any_em.scores.ingest([s.model_copy(update={"reward_model_id": rm2.id, "score": 0.7}) for s in scores]) == 3
    with any_em.session() as s:
        rows = s.execute(
            select(RewardModel.version, func.avg(RewardScore.score))
            .join(RewardModel)
            .group_by(RewardModel.version)
            .order_by(RewardModel.version)
        ).all()
    assert [(v, round(a, 3)) for v, a in rows] == [("1+aaa", 0.5), ("2+bbb", 0.7)]
    assert any_em.scores.unscored(rm1.id, ["prosody"]) == []
    assert len(any_em.scores.unscored(rm1.id, ["prosody", "other"])) == 3


def test_unique_constraint_stops_duplicate_rollout_via_orm(any_em) -> None:
    ids, pol = _seed(any_em)
    pid = next(iter(ids.values()))
    with any_em.session() as s, s.begin():
        s.add(Rollout(prompt_id=pid, policy_id=pol.id, round=0, sample_index=0, messages=[], text="a"))
    with pytest.raises(IntegrityError), any_em.session() as s, s.begin():
        s.add(Rollout(prompt_id=pid, policy_id=pol.id, round=0, sample_index=0, messages=[], text="b"))


def test_nan_score_refused_by_model_and_store(any_em) -> None:
    ids, pol = _seed(any_em)
    keys = any_em.rollouts.ingest(_rollouts(ids.values(), pol.id, k=1))
    rm = any_em.scores.register_reward_model(RewardModelCreate(name="x", version="1", kind="learned"))
    with pytest.raises(ValueError, match="finite"):
        ScoreCreate(rollout_id=1, reward_model_id=rm.id, dimension="d", score=float("nan"))
    rid = next(iter(keys.values()))
    with pytest.raises(IntegrityError):  # the hot-path tuple form skips pydantic; the CHECK still holds
        any_em.scores.ingest([(rid, rm.id, "d", float("nan"), None, None)])
    assert any_em.scores.count() == 0


def test_failed_import_writes_nothing(any_em) -> None:
    _seed(any_em)
    before = len(any_em.catalog.prompts())
    bad = [
        {"external_id": "ok1", "regime": "asr", "messages": [{"role": "user", "content": "fine"}]},
        {"external_id": "bad", "regime": "karaoke", "messages": [{"role": "user", "content": "x"}]},
    ]
    with pytest.raises(InvalidInput, match=r"prompts:2 \(prompt\): field regime"):
        any_em.catalog.import_prompts(bad)
    assert len(any_em.catalog.prompts()) == before


def test_bulk_ingest_rolls_back_whole_batch_on_error(any_em) -> None:
    ids, pol = _seed(any_em)
    good = _rollouts(ids.values(), pol.id, k=1)
    orphan = good[0].model_copy(update={"prompt_id": 999_999, "sample_index": 5})  # FK violation
    with pytest.raises(IntegrityError):
        any_em.rollouts.ingest([*good, orphan])
    assert any_em.rollouts.count() == 0


def test_rollout_pointing_at_unrecorded_blob_is_refused(any_em) -> None:
    ids, pol = _seed(any_em)
    r = _rollouts(ids.values(), pol.id, k=1)[0].model_copy(update={"audio_sha256": "a" * 64})
    with pytest.raises(InvalidInput, match="not recorded"):
        any_em.rollouts.ingest([r])


def test_policy_versions_increment_and_never_overwrite(any_em) -> None:
    v0 = any_em.catalog.register_policy("pol", "file:///a")
    v1 = any_em.catalog.register_policy("pol", "file:///b", parent_id=v0.id)
    assert (v0.version, v1.version, v1.parent_id) == (0, 1, v0.id)
    assert any_em.catalog.policy("pol").version == 1
    with pytest.raises(InvalidInput, match="already registered"):
        any_em.catalog.register_policy("pol", "file:///other", version=0)
