"""Preference labels, snapshots (reproducible hash, lineage) and exports that trainers load."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import text

from earmark import exports
from earmark.domain.enums import Role
from earmark.domain.records import RewardModelCreate, ScoreCreate
from earmark.errors import InvalidInput
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.services.datasets import SnapshotFilters
from earmark.services.labels import LabelConfig

ADMIN = Principal(None, "admin", Role.admin)


def _judge_all(em, camp_id, raters, pick):
    """Every rater judges every item; pick(rater_index, comparison rollout ids) -> canonical 'A'|'B'|'tie'."""
    from earmark.store.models import Comparison

    for i, r in enumerate(raters):
        while leases := r.tasks.claim(camp_id, want=1):
            le = leases[0]
            with em.session() as s:
                comp = s.get(Comparison, le.comparison_id)
            canon = pick(i, comp)
            if canon == "tie":
                choice = "tie"
            else:  # translate the canonical answer to what this rater saw
                shown_first_is_a = le.order[0] == 0
                choice = "A" if (canon == "A") == shown_first_is_a else "B"
            r.tasks.submit(
                le.task_id,
                le.lease_token,
                uuid.uuid4(),
                {
                    "choice": choice,
                    "strength": 3,
                    "ratings": {"prosody": 3, "persona_consistency": 3, "correctness": 3},
                },
            )


@pytest.fixture
def world(em):
    data = seed_rollouts(em, n_prompts=4, k=3)
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="c", overlap=3, gold_ratio=0.0, max_items=6))
    raters = [em.as_principal(make_user(em, f"r{i}")) for i in range(3)]
    return data, camp, raters


def test_weighted_majority_adjudication_and_drops(em, world) -> None:
    data, camp, raters = world
    # raters 0 and 1 agree on A, rater 2 dissents
    _judge_all(em, camp.id, raters, lambda i, comp: "A" if i < 2 else "B")
    labels, counts = em.labels.build([camp.id], LabelConfig(min_agreement=0.6))
    assert counts["human"] == len(labels) > 0
    from earmark.store.models import Comparison

    with em.session() as s:
        comps = {c.id: c for c in s.query(Comparison).all()}
    for lab in labels:
        assert lab.chosen_rollout_id == comps[lab.comparison_id].rollout_ids[0]
        assert lab.margin == pytest.approx(2 / 3, abs=1e-6) and lab.votes == 3
    # a stricter agreement threshold drops them as low-agreement
    labels2, counts2 = em.labels.build([camp.id], LabelConfig(min_agreement=0.7))
    assert labels2 == [] and counts2["dropped"]["low_agreement"] == len(labels)
    # an excluded rater no longer counts: the two remaining agree fully
    em.as_principal(Principal(None, "rev", Role.reviewer)).users.set_cleared(raters[2].ctx.principal.user_id, False)
    labels3, _ = em.labels.build([camp.id], LabelConfig(min_agreement=0.7))
    assert len(labels3) == len(labels) and all(x.margin == 1.0 for x in labels3)
    # an adjudication wins over the vote
    cid = labels[0].comparison_id
    with em.session() as s, s.begin():
        reviewer = make_user(em, "rev1", Role.reviewer)
        s.execute(
            text(
                "INSERT INTO adjudications (comparison_id, reviewer_id, choice, preference, note) "
                "VALUES (:c, :r, 'B', -1, 'A mispronounces')"
            ),
            {"c": cid, "r": reviewer.user_id},
        )
    labels4, counts4 = em.labels.build([camp.id], LabelConfig())
    adj = next(x for x in labels4 if x.comparison_id == cid)
    assert adj.source == "adjudicated" and adj.chosen_rollout_id == comps[cid].rollout_ids[1]
    assert counts4["adjudicated"] == 1


def _ai_setup(em, data):
    rm = em.scores.register_reward_model(RewardModelCreate(name="prosody", version="1", kind="acoustic"))
    rows = [
        ScoreCreate(rollout_id=rid, reward_model_id=rm.id, dimension="prosody_match", score=0.2 + 0.3 * key[2])
        for key, rid in data["rollouts"].items()
    ]
    em.scores.ingest(rows)
    return rm


def test_snapshot_hash_reproducible_lineage_and_ai_marked(em, world) -> None:
    data, camp, raters = world
    _judge_all(em, camp.id, raters, lambda i, comp: "A")
    rm = _ai_setup(em, data)
    filters = SnapshotFilters(campaign_ids=[camp.id], labels=LabelConfig(ai_fill=True, ai_reward_model_ids=[rm.id]))
    ds1 = em.datasets.build("prefs", filters)
    ds2 = em.datasets.build("prefs", filters)
    assert ds1.id == ds2.id and ds1.version == 1  # same filters, same data: same snapshot
    rows, _ = em.datasets.rows(filters)
    assert ds1.content_sha256 == em.datasets.build("prefs-copy", filters).content_sha256
    table = em.datasets.load(ds1).to_pylist()
    assert len(table) == ds1.row_count == len(rows)
    sources = {r["label_source"] for r in table}
    assert sources == {"human", "ai"}
    ai_rows = [r for r in table if r["label_source"] == "ai"]
    assert all(r["judgment_ids"] == [] and r["comparison_id"] is None for r in ai_rows)
    # human pairs are not relabelled by AI
    human_pairs = {
        frozenset((r["chosen_rollout_id"], r["rejected_rollout_id"])) for r in table if r["label_source"] == "human"
    }
    assert not any(frozenset((r["chosen_rollout_id"], r["rejected_rollout_id"])) in human_pairs for r in ai_rows)
    # AI-only filter
    only_human = em.datasets.build("prefs-h", filters.model_copy(update={"label_sources": ["human"]}))
    assert only_human.manifest["label_counts"]["ai"] == 0
    # lineage from an exported row back to judgments and raters
    row = next(r for r in table if r["label_source"] == "human")
    lin = em.datasets.lineage(ds1, row["row_id"])
    assert {j["username"] for j in lin["judgments"]} == {"r0", "r1", "r2"}
    assert {r["id"] for r in lin["rollouts"]} == {row["chosen_rollout_id"], row["rejected_rollout_id"]}
    # new judgments change the content, hence the hash and the version
    with em.session() as s, s.begin():
        s.execute(text("DELETE FROM judgments WHERE id = :j"), {"j": row["judgment_ids"][0]})
    ds3 = em.datasets.build("prefs", filters)
    assert ds3.version == 2 and ds3.content_sha256 != ds1.content_sha256


def test_exports_load_in_trainers_formats(em, world) -> None:
    data, camp, raters = world
    _judge_all(em, camp.id, raters, lambda i, comp: "A")
    rows, _ = em.datasets.rows(SnapshotFilters(campaign_ids=[camp.id]))
    import datasets as hf_datasets
    import pyarrow.parquet as pq

    trl = exports.to_trl(rows)
    ds = hf_datasets.Dataset.from_list(trl)
    assert set(ds.column_names) >= {"prompt", "chosen", "rejected"}
    assert ds[0]["chosen"][0]["role"] == "assistant" and ds[0]["prompt"][-1]["role"] == "user"
    back = pq.read_table(io.BytesIO(exports.write(trl, "parquet"))).to_pylist()
    assert back[0]["chosen"] == trl[0]["chosen"]
    nemo = exports.to_nemo_rl(rows)
    assert [c["rank"] for c in nemo[0]["completions"]] == [0, 1]
    orl = exports.to_openrlhf(rows)
    assert orl[0]["chosen"][-1]["content"] == rows[0]["chosen_text"]
    assert exports.to_verl(rows) == []  # no verifiable references in this world
    jl = exports.write(nemo, "jsonl").decode().splitlines()
    assert json.loads(jl[0])["context"] == nemo[0]["context"]


def test_empty_selection_is_a_clear_error(em, world) -> None:
    with pytest.raises(InvalidInput, match="select no preference pairs"):
        em.datasets.build("nothing", SnapshotFilters(campaign_ids=[world[1].id]))
    with pytest.raises(InvalidInput, match="unknown label source"):
        em.datasets.build("x", SnapshotFilters(label_sources=["crowd"]))
