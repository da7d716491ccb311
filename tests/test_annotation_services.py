"""Accounts, campaigns and leases on real PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import select, text

from earmark.domain.enums import Role
from earmark.errors import AuthenticationFailed, Conflict, InvalidInput, LeaseExpired, PermissionDenied
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import AuditLog, Judgment, User

ADMIN = Principal(None, "admin", Role.admin)


def _campaign(em, **kw):
    seed_rollouts(em)
    spec = CampaignCreate(
        name=kw.pop("name", "c1"), overlap=kw.pop("overlap", 2), gold_ratio=kw.pop("gold_ratio", 0.0), **kw
    )
    return em.as_principal(ADMIN).campaigns.create(spec)


def _answer(choice="A", **kw):
    return {
        "choice": choice,
        "strength": 2,
        "ratings": {"prosody": 4, "persona_consistency": 3, "correctness": 5},
        "rationale": "clearer",
        "listen_ms": {"A": 1200, "B": 900},
        **kw,
    }


def test_password_hashed_with_argon2id_and_login_throttled(em) -> None:
    make_user(em, "rita")
    with em.session() as s:
        h = s.scalar(select(User.password_hash).where(User.username == "rita"))
    assert h.startswith("$argon2id$") and "m=65536,t=3,p=4" in h
    assert em.users.authenticate("rita", "correct horse battery").role == Role.rater
    for _ in range(em.settings.login_max_failures):
        with pytest.raises(AuthenticationFailed, match="wrong username or password"):
            em.users.authenticate("rita", "nope nope nope")
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        em.users.authenticate("rita", "correct horse battery")  # even the right password waits
    with pytest.raises(AuthenticationFailed, match="wrong username or password"):
        em.users.authenticate("nobody", "whatever1")  # same message for unknown users


def test_roles_are_checked_on_service_calls(em) -> None:
    rater = make_user(em, "rita")
    with pytest.raises(PermissionDenied, match="may not campaigns.manage"):
        em.as_principal(rater).campaigns.create(CampaignCreate(name="x"))
    with pytest.raises(PermissionDenied):
        em.as_principal(rater).users.create("eve", "password123", Role.admin)
    with pytest.raises(PermissionDenied, match="tasks.rate"):
        em.tasks.claim(1)  # the engineer/system principal does not rate


def test_claim_submit_canonical_and_idempotent(em) -> None:
    camp = _campaign(em)
    rita = em.as_principal(make_user(em, "rita"))
    leases = rita.tasks.claim(camp.id)
    assert len(leases) == 2 and len({le.comparison_id for le in leases}) == 2
    lease = leases[0]
    item = rita.tasks.item(lease)
    assert [st.label for st in item.stimuli] == ["A", "B"]
    assert rita.tasks.audio(item, "A")[:4] == b"RIFF"
    sub_id = uuid.uuid4()
    res = rita.tasks.submit(lease.task_id, lease.lease_token, sub_id, _answer("A"))
    again = rita.tasks.submit(lease.task_id, lease.lease_token, sub_id, _answer("A"))  # double click
    fresh = rita.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), _answer("A"))  # lost response
    assert (again.judgment_id, fresh.judgment_id) == (res.judgment_id, res.judgment_id)
    assert again.duplicate and fresh.duplicate and not res.duplicate
    with em.session() as s:
        j = s.get(Judgment, res.judgment_id)
        # the rater chose the clip shown first; canonical preference follows the recorded order
        shown_first_is_canonical_a = lease.order[0] == 0
        assert j.preference == pytest.approx(2 / 3 if shown_first_is_canonical_a else -2 / 3)
        assert j.presentation == {"order": lease.order} and j.listen_ms == {"A": 1200, "B": 900}
        assert s.scalar(select(AuditLog.action).where(AuditLog.entity == "judgment")) == "judgments.submit"
        assert s.scalar(text("SELECT count(*) FROM judgments")) == 1


def test_rater_never_sees_an_item_twice(em) -> None:
    camp = _campaign(em, overlap=3)
    rita = em.as_principal(make_user(em, "rita"))
    seen = []
    while leases := rita.tasks.claim(camp.id, want=1):
        le = leases[0]
        assert le.comparison_id not in seen
        seen.append(le.comparison_id)
        rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), _answer("B"))
    assert len(seen) == len(set(seen)) == rita.campaigns.progress(camp.id).items


def test_expired_lease_returns_to_pool_and_late_submit_rules(em) -> None:
    camp = _campaign(em, overlap=1)
    rita = em.as_principal(make_user(em, "rita"))
    bob = em.as_principal(make_user(em, "bob"))
    le = rita.tasks.claim(camp.id, want=1)[0]
    with em.session() as s, s.begin():
        s.execute(
            text("UPDATE tasks SET lease_expires_at = now() - interval '1 minute' WHERE id = :i"), {"i": le.task_id}
        )
    # nobody took it yet: the late judgment is kept and marked late
    res = rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), _answer())
    assert res.late and not res.duplicate

    le2 = rita.tasks.claim(camp.id, want=1)[0]
    with em.session() as s, s.begin():
        s.execute(
            text("UPDATE tasks SET lease_expires_at = now() - interval '1 minute' WHERE id = :i"), {"i": le2.task_id}
        )
    taken = bob.tasks.claim(camp.id, want=2)
    assert le2.task_id in [t.task_id for t in taken]  # back in the pool, handed to bob
    with pytest.raises(LeaseExpired, match="another rater took it"):
        rita.tasks.submit(le2.task_id, le2.lease_token, uuid.uuid4(), _answer())
    with pytest.raises(LeaseExpired):
        rita.tasks.heartbeat(le2.task_id, le2.lease_token)


def test_heartbeat_extends_and_release_returns(em) -> None:
    camp = _campaign(em, overlap=1)
    rita = em.as_principal(make_user(em, "rita"))
    le = rita.tasks.claim(camp.id, want=1)[0]
    assert rita.tasks.heartbeat(le.task_id, le.lease_token) >= le.expires_at
    rita.tasks.release(le.task_id, le.lease_token)
    assert rita.campaigns.progress(camp.id).leased == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"choice": "A", "strength": 2, "ratings": {"prosody": 7, "persona_consistency": 3, "correctness": 5}},
        {"choice": "A", "strength": 2, "ratings": {"prosody": 4, "persona_consistency": 3}},
        {"choice": "maybe", "strength": 2, "ratings": {}},
        {"choice": "A", "ratings": {"prosody": 4, "persona_consistency": 3, "correctness": 5}},
        {**_answer(), "rationale": "x" * 5000},
    ],
)
def test_bad_answers_refused_and_nothing_stored(em, bad) -> None:
    camp = _campaign(em, overlap=1)
    rita = em.as_principal(make_user(em, "rita"))
    le = rita.tasks.claim(camp.id, want=1)[0]
    with pytest.raises(InvalidInput):
        rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), bad)
    with em.session() as s:
        assert s.scalar(text("SELECT count(*) FROM judgments")) == 0


def test_gold_items_mixed_in_and_scored(em) -> None:
    camp = _campaign(em, overlap=1, gold_ratio=0.3)
    with em.session() as s:
        n_gold = s.scalar(text("SELECT count(*) FROM comparisons WHERE is_gold AND campaign_id = :c"), {"c": camp.id})
    assert n_gold >= 1
    rita = em.as_principal(make_user(em, "rita"))
    outcomes = []
    while leases := rita.tasks.claim(camp.id, want=1):
        le = leases[0]
        # always pick the clip shown first: right on gold only when canonical A was shown first
        res = rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), _answer("A"))
        if res.gold_correct is not None:
            outcomes.append((res.gold_correct, le.order[0] == 0))
    assert len(outcomes) == n_gold
    assert all(correct == shown_first for correct, shown_first in outcomes)


def test_campaign_with_no_rollouts_is_a_clear_error(em) -> None:
    with pytest.raises(InvalidInput, match="no rollouts match"):
        em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="empty", policy_ids=[12345]))
    camp = _campaign(em)
    with pytest.raises(Conflict, match="exists"):
        em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="c1"))
    assert camp.status == "open"
