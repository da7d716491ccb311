"""Review service on real PostgreSQL: disputed items, adjudication upserts, blind views, exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid

import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import func, select

from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import Role
from earmark.errors import InvalidInput, PermissionDenied
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.services.review import ReviewItem, ReviewJudgment, ReviewStimulus, disagreement
from earmark.store.models import Adjudication, AuditLog

ADMIN = Principal(None, "bootstrap", Role.admin)
POLICY = "zebra-policy-xq7"


def world(em, n_prompts: int = 3):
    """Two raters on every item: rita prefers canonical A, bob canonical B, except on the first
    item where both prefer A (so it is not disputed)."""
    seed_rollouts(em, n_prompts=n_prompts, policy=POLICY)
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="rev", overlap=2, gold_ratio=0.0))
    first_item = None
    for name, canon in (("rita", 0), ("bob", 1)):
        me = em.as_principal(make_user(em, name))
        while leases := me.tasks.claim(camp.id, want=1):
            le = leases[0]
            first_item = first_item or le.comparison_id
            want = 0 if le.comparison_id == first_item else canon
            me.tasks.submit(
                le.task_id,
                le.lease_token,
                uuid.uuid4(),
                {
                    "choice": "A" if le.order[0] == want else "B",
                    "strength": 3,
                    "ratings": {d: 3 + canon for d in RATING_DIMENSIONS},
                    "rationale": '=HYPERLINK("http://evil")' if name == "bob" else "clear winner",
                    "listen_ms": {"A": 300, "B": 400},
                },
            )
    return camp, first_item


def test_disagreement_measure() -> None:
    dis, split, spread, summary = disagreement([("A", {"prosody": 1}), ("B", {"prosody": 5}), ("A", {"prosody": 3})])
    assert split and dis == pytest.approx(1 / 3, abs=1e-3) and spread == pytest.approx(1.633, abs=1e-3)
    assert summary.startswith("A 2 · B 1")
    assert disagreement([("A", {}), ("A", {})])[:3] == (0.0, False, 0.0)
    assert disagreement([(None, {"mushra": [20, 100]}), (None, {"mushra": [80, 100]})])[2] == pytest.approx(1.5)


def test_disputed_items_listed_most_split_first(em) -> None:
    camp, agreed = world(em)
    reviewer = em.as_principal(make_user(em, "rev", Role.reviewer))
    disputed = reviewer.review.disputed(camp.id)
    assert agreed not in [d.comparison_id for d in disputed]
    assert len(disputed) == 2 and all(d.split and d.judgments == 2 for d in disputed)
    # the agreed item shows once a rating spread this small counts (3 vs 4 on every dimension: sd 0.5)
    assert agreed in [d.comparison_id for d in reviewer.review.disputed(camp.id, min_disagreement=1.0, rating_std=0.5)]
    assert reviewer.review.disputed(camp.id, min_disagreement=1.0, rating_std=5.0)[0].split


def test_adjudication_upserts_latest_wins_and_is_audited(em) -> None:
    camp, _ = world(em)
    rev = make_user(em, "rev", Role.reviewer)
    reviewer = em.as_principal(rev)
    cid = reviewer.review.disputed(camp.id)[0].comparison_id
    first = reviewer.review.adjudicate(cid, "A", 2 / 3, "A keeps the persona")
    second = reviewer.review.adjudicate(cid, "tie", 0.0, "on reflection, equal")
    assert (first.choice, second.choice, second.reviewer) == ("A", "tie", "rev")
    with em.session() as s:
        rows = s.scalars(select(Adjudication).where(Adjudication.comparison_id == cid)).all()
        audits = s.scalars(select(AuditLog).where(AuditLog.action == "judgments.adjudicate")).all()
    assert len(rows) == 1 and rows[0].choice == "tie" and rows[0].reviewer_id == rev.user_id
    assert [a.details["choice"] for a in audits] == ["A", "tie"] and all(a.actor_id == rev.user_id for a in audits)
    assert [a.choice for a in reviewer.review.adjudications(camp.id)] == ["tie"]
    assert reviewer.review.disputed(camp.id)[0].adjudication is not None

    with pytest.raises(InvalidInput, match="choice 'C' is unknown"):
        reviewer.review.adjudicate(cid, "C")
    with pytest.raises(InvalidInput, match="contradicts choice A"):
        reviewer.review.adjudicate(cid, "A", -0.5)
    with pytest.raises(InvalidInput, match="named reviewer account"):
        em.as_principal(Principal(None, "cli", Role.admin)).review.adjudicate(cid, "A")
    with pytest.raises(PermissionDenied):
        em.as_principal(make_user(em, "carl")).review.adjudicate(cid, "A")


def test_review_item_shows_raters_but_no_policy(em) -> None:
    camp, _ = world(em)
    reviewer = em.as_principal(make_user(em, "rev", Role.reviewer))
    item = reviewer.review.item(reviewer.review.disputed(camp.id)[0].comparison_id)
    fields = {f.name for cls in (ReviewItem, ReviewStimulus, ReviewJudgment) for f in dataclasses.fields(cls)}
    assert not fields & {"policy", "policy_id", "policy_name", "version", "rollout_id", "rollout_ids", "score"}
    assert POLICY not in repr(item) and "ckpt" not in repr(item)
    assert sorted(j.rater for j in item.judgments) == ["bob", "rita"]
    assert {j.choice for j in item.judgments} == {"A", "B"}  # canonical labels
    assert [s.label for s in item.stimuli] == ["A", "B"]
    assert reviewer.review.audio(item, "A")[:4] == b"RIFF"
    assert all(sorted(j.shown_order) == ["A", "B"] for j in item.judgments)


def test_export_csv_and_jsonl(em) -> None:
    camp, _ = world(em)
    admin = em.as_principal(make_user(em, "ada", Role.admin))
    lines = admin.review.export(camp.id, "jsonl").decode().splitlines()
    records = [json.loads(x) for x in lines]
    with em.session() as s:
        n = s.scalar(select(func.count()).select_from(Adjudication))
    assert len(records) == 6 and n == 0
    assert {r["rater"] for r in records} == {"rita", "bob"}
    assert all(len(r["rollout_ids"]) == 2 and r["presentation"]["order"] for r in records)
    rows = list(csv.DictReader(io.StringIO(admin.review.export(camp.id, "csv").decode())))
    assert len(rows) == 6
    bobs = [r for r in rows if r["rater"] == "bob"]
    assert all(r["rationale"].startswith("'=HYPERLINK") for r in bobs), "spreadsheet formulas must be defused"
    assert json.loads(rows[0]["ratings"]) == records[0]["ratings"]
    with pytest.raises(InvalidInput, match="export format 'xml' is unknown"):
        admin.review.export(camp.id, "xml")
    tp = {t.rater: t for t in admin.review.throughput(camp.id)}
    assert tp["rita"].judgments == 3 and tp["bob"].judgments == 3
