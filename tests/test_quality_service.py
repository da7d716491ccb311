"""Quality service on real PostgreSQL: the gold screen excludes, a reviewer clears, new evidence counts."""

from __future__ import annotations

import uuid

import krippendorff
import numpy as np
import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import select

from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import Role
from earmark.errors import PermissionDenied
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.services.quality import QualityConfig
from earmark.store.models import AuditLog, User

ADMIN = Principal(None, "bootstrap", Role.admin)


def rate_all(
    em, rater: Principal, campaign_id: int, *, gold_right: bool, limit: int | None = None, rating: int | None = None
) -> int:
    """Rate every item left for ``rater``; on gold items answer right or wrong on purpose."""
    me = em.as_principal(rater)
    n = 0
    while (limit is None or n < limit) and (leases := me.tasks.claim(campaign_id, want=1)):
        le = leases[0]
        canonical_a_shown_as = "A" if le.order[0] == 0 else "B"
        other = "B" if canonical_a_shown_as == "A" else "A"
        me.tasks.submit(
            le.task_id,
            le.lease_token,
            uuid.uuid4(),
            {
                "choice": canonical_a_shown_as if gold_right else other,
                "strength": 2,
                "ratings": {d: rating or 1 + n % 5 for d in RATING_DIMENSIONS},
                "listen_ms": {"A": 300, "B": 400},
            },
        )
        n += 1
    return n


def test_low_gold_rater_excluded_until_a_reviewer_clears(committed_em) -> None:
    em = committed_em
    seed_rollouts(em, n_prompts=6)
    admin = em.as_principal(ADMIN)
    c1 = admin.campaigns.create(CampaignCreate(name="c1", overlap=1, gold_ratio=0.5))
    c2 = admin.campaigns.create(CampaignCreate(name="c2", overlap=1, gold_ratio=0.5))
    bad, good = make_user(em, "bad"), make_user(em, "good")
    reviewer = em.as_principal(make_user(em, "rev", Role.reviewer))
    rate_all(em, bad, c1.id, gold_right=False)  # every gold answer wrong
    rate_all(em, good, c2.id, gold_right=True)

    report = {q.username: q for q in reviewer.quality.rater_report()}
    assert report["bad"].gold_items >= 5 and report["bad"].gold_accuracy == 0.0
    assert report["good"].gold_accuracy == 1.0 and "low_gold_accuracy" not in report["good"].flags
    assert "low_gold_accuracy" in report["bad"].flags

    excluded = reviewer.quality.apply_gold_flags(QualityConfig(min_gold_accuracy=0.7, min_gold_items=5))
    assert [q.username for q in excluded] == ["bad"]
    assert em.users.find("bad").cleared_for_aggregation is False
    assert em.users.find("good").cleared_for_aggregation is True
    assert [q.username for q in reviewer.quality.flagged()] == ["bad"]

    reviewer.quality.clear(bad.user_id, "spoke with them; retrained")
    assert em.users.find("bad").cleared_for_aggregation is True
    assert reviewer.quality.apply_gold_flags() == []  # a human decision stands against old evidence
    with em.session() as s:
        actions = s.scalars(
            select(AuditLog.action)
            .where(AuditLog.entity == "user", AuditLog.entity_id == str(bad.user_id))
            .order_by(AuditLog.id)
        ).all()
    assert actions[-2:] == ["raters.exclude", "raters.clear"]

    c3 = admin.campaigns.create(CampaignCreate(name="c3", overlap=1, gold_ratio=0.5))
    while True:  # new evidence: answer until another gold item was answered (wrong)
        before = reviewer.quality.rater_report()
        rate_all(em, bad, c3.id, gold_right=False, limit=1)
        after = {q.username: q for q in reviewer.quality.rater_report()}
        if after["bad"].gold_items > {q.username: q for q in before}["bad"].gold_items:
            break
    assert [q.username for q in reviewer.quality.apply_gold_flags()] == ["bad"]
    assert em.users.find("bad").cleared_for_aggregation is False


def test_quality_and_review_need_the_reviewer_role(em) -> None:
    seed_rollouts(em)
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="c", overlap=1, gold_ratio=0.0))
    rater = em.as_principal(make_user(em, "rita"))
    with pytest.raises(PermissionDenied, match="judgments.review"):
        rater.quality.rater_report()
    with pytest.raises(PermissionDenied):
        rater.quality.apply_gold_flags()
    with pytest.raises(PermissionDenied):
        rater.quality.clear(1)
    with pytest.raises(PermissionDenied):
        rater.review.disputed(camp.id)
    with pytest.raises(PermissionDenied, match="data.read"):
        rater.review.export(camp.id)


def test_agreement_per_campaign_and_dimension_matches_krippendorff(em) -> None:
    seed_rollouts(em, n_prompts=4)
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="agree", overlap=3, gold_ratio=0.0))
    for i, name in enumerate(("r1", "r2", "r3")):
        rate_all(em, make_user(em, name), camp.id, gold_right=True, rating=2 + i % 2)
    reviewer = em.as_principal(make_user(em, "rev", Role.reviewer))
    alphas = {a.dimension: a for a in reviewer.quality.agreement(camp.id)}
    assert set(alphas) >= {"choice", "preference", *RATING_DIMENSIONS}
    assert alphas["choice"].level == "nominal" and alphas["prosody"].level == "ordinal"
    assert alphas["choice"].units == 4 and alphas["choice"].raters == 3
    # everyone chose canonical A everywhere: no variation in choices -> alpha undefined, not "perfect"
    assert alphas["choice"].alpha is None
    # prosody: r1 and r3 always 2, r2 always 3 -> systematic disagreement, alpha from the package itself
    rows = reviewer.quality.rows(camp.id)
    raters = sorted({r.rater_id for r in rows})
    items = sorted({r.comparison_id for r in rows})
    data = np.full((3, len(items)), np.nan)
    for r in rows:
        data[raters.index(r.rater_id), items.index(r.comparison_id)] = r.ratings["prosody"]
    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    assert alphas["prosody"].alpha == pytest.approx(expected, abs=1e-4)
    with em.session() as s:
        assert s.scalar(select(User.cleared_for_aggregation).where(User.username == "r1")) is True
