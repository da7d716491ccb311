"""Issue 18 services on real PostgreSQL: serving order, skips, campaign choice and progress, rater
groups, login throttling per device and name (no name enumeration, every failure audited), CSV import."""

from __future__ import annotations

import uuid

import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import select

from earmark.domain.enums import Role
from earmark.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import AuditLog, RaterGroupMember, TaskSkip, User

ADMIN = Principal(None, "admin", Role.admin)
ANSWER = {"choice": "A", "strength": 2, "ratings": {"prosody": 4, "persona_consistency": 3, "correctness": 5}}


def _with(em, **settings):
    """The same store with some settings changed (Settings is frozen)."""
    from dataclasses import replace

    from earmark.api import Earmark

    return Earmark(replace(em.ctx, settings=em.settings.model_copy(update=settings)))


def _campaign(em, name="c1", overlap=2, n_prompts=4, seed=True):
    if seed:
        seed_rollouts(em, n_prompts=n_prompts)
    return em.as_principal(ADMIN).campaigns.create(CampaignCreate(name=name, overlap=overlap, gold_ratio=0.0))


def _judge(em_r, camp_id, want=1):
    lease = em_r.tasks.claim(camp_id, want=want)[0]
    em_r.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), ANSWER)
    return lease


@pytest.mark.parametrize("order", ["depth_first", "breadth_first"])
def test_serving_order_is_configurable_depth_first_by_default(em, order) -> None:
    assert type(em.settings).model_fields["serving_order"].default == "depth_first"
    em = _with(em, serving_order=order)
    camp = _campaign(em, overlap=2)
    first = _judge(em.as_principal(make_user(em, "r1")), camp.id)
    second = _judge(em.as_principal(make_user(em, "r2")), camp.id)
    # depth-first: the second rater completes the first item; breadth-first: opens a new one
    assert (second.comparison_id == first.comparison_id) == (order == "depth_first")


def test_skip_is_recorded_and_the_item_goes_to_others(em) -> None:
    camp = _campaign(em, overlap=1, n_prompts=2)
    rita = em.as_principal(make_user(em, "rita"))
    lease = rita.tasks.claim(camp.id, want=1)[0]
    rita.rating.skip(lease.task_id, lease.lease_token)
    with em.session() as s:
        assert s.scalar(select(TaskSkip.comparison_id).where(TaskSkip.rater_id == rita.ctx.principal.user_id)) == (
            lease.comparison_id
        )
        assert s.scalar(select(AuditLog.action).where(AuditLog.action == "tasks.skip")) == "tasks.skip"
    # never handed back to her, even when it is the only thing left
    for _ in range(3):
        got = rita.tasks.claim(camp.id, want=1)
        assert all(le.comparison_id != lease.comparison_id for le in got)
        for le in got:
            rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), ANSWER)
    assert rita.tasks.claim(camp.id) == []
    sam = em.as_principal(make_user(em, "sam"))
    assert sam.tasks.claim(camp.id, want=1)[0].comparison_id == lease.comparison_id
    with pytest.raises(Exception, match="no longer leased"):
        rita.rating.skip(lease.task_id, lease.lease_token)


def test_campaign_with_work_first_and_progress(em) -> None:
    seed_rollouts(em, n_prompts=3)
    old = _campaign(em, name="old", overlap=1, seed=False)
    new = _campaign(em, name="new", overlap=1, seed=False)
    rita = em.as_principal(make_user(em, "rita"))
    assert [c.name for c in rita.rating.campaigns()] == ["new", "old"]  # both have work: newest first
    while leases := rita.tasks.claim(new.id, want=1):
        rita.tasks.submit(leases[0].task_id, leases[0].lease_token, uuid.uuid4(), ANSWER)
    choices = rita.rating.campaigns()
    assert [(c.name, c.left_for_me) for c in choices] == [("old", 3), ("new", 0)]
    p = rita.rating.progress(new.id)
    assert (p.done_by_me, p.left_for_me, p.left_in_campaign) == (3, 0, 0) and p.last_saved_task is not None
    p = rita.rating.progress(old.id)
    assert (p.done_by_me, p.left_for_me, p.left_in_campaign, p.last_saved_at) == (0, 3, 3, None)


def test_rater_groups_limit_who_is_served(em) -> None:
    camp = _campaign(em, overlap=1)
    rita = em.as_principal(make_user(em, "rita"))
    sam = em.as_principal(make_user(em, "sam"))
    admin = em.as_principal(ADMIN)
    admin.rating.set_members("night shift", ["rita"])
    admin.rating.assign_campaign(camp.id, ["night shift"])
    assert admin.rating.campaign_groups(camp.id) == ["night shift"]
    assert [g.members for g in admin.rating.groups()] == [["rita"]]
    assert sam.tasks.claim(camp.id) == [] and sam.rating.campaigns() == []
    assert len(rita.tasks.claim(camp.id)) == 2 and [c.name for c in rita.rating.campaigns()] == ["c1"]
    with pytest.raises(NotFound, match="rater group 'day' does not exist"):
        admin.rating.assign_campaign(camp.id, ["day"])
    admin.rating.assign_campaign(camp.id, [])  # open to all again
    assert len(sam.tasks.claim(camp.id)) == 2


def test_login_throttled_per_device_and_name_without_enumeration(em) -> None:
    make_user(em, "rita")
    limit = em.settings.login_max_failures
    for _ in range(limit):
        with pytest.raises(AuthenticationFailed, match="wrong username or password"):
            em.users.authenticate("rita", "nope nope nope", client="dev-attacker")
    with pytest.raises(AuthenticationFailed, match="too many failed logins") as locked:
        em.users.authenticate("rita", "correct horse battery", client="dev-attacker")
    # the rater on her own device is not locked out by someone else's guesses
    assert em.users.authenticate("rita", "correct horse battery", client="dev-rita").username == "rita"
    # an unknown name behaves exactly like a real one: same messages, same lock
    for _ in range(limit):
        with pytest.raises(AuthenticationFailed, match="wrong username or password"):
            em.users.authenticate("nobody", "nope nope nope", client="dev-attacker")
    with pytest.raises(AuthenticationFailed, match="too many failed logins") as unknown:
        em.users.authenticate("nobody", "nope nope nope", client="dev-attacker")
    assert unknown.value.code == locked.value.code == "login_throttled"
    with em.session() as s:
        failed = s.scalars(select(AuditLog).where(AuditLog.action == "auth.failed")).all()
    assert len(failed) == 2 * limit + 2  # every single failure, throttled ones too
    assert {a.details["username"] for a in failed} == {"rita", "nobody"}
    assert {a.details["reason"] for a in failed} == {"bad_credentials", "throttled"}


def test_login_throttled_per_client_across_names(em) -> None:
    em = _with(em, login_max_failures_per_client=3)
    for i in range(3):
        with pytest.raises(AuthenticationFailed, match="wrong"):
            em.users.authenticate(f"name{i}", "nope nope nope", client="spray")
    with pytest.raises(AuthenticationFailed, match="too many failed logins"):
        em.users.authenticate("name9", "nope nope nope", client="spray")


def test_csv_import_all_or_nothing_with_groups(em) -> None:
    admin = em.as_principal(ADMIN)
    bad = "username,password,role\nann,longpassword1,rater\nbob,short,rater\n"
    with pytest.raises(InvalidInput, match="CSV line 3: password must have at least 8"):
        admin.users.import_csv(bad)
    with pytest.raises(InvalidInput, match="CSV line 2: role 'boss' is unknown"):
        admin.users.import_csv("username,password,role\nann,longpassword1,boss\n")
    with pytest.raises(InvalidInput, match="header line"):
        admin.users.import_csv("name,pw\nann,longpassword1\n")
    assert admin.users.find("ann") is None  # nothing half-written
    made = admin.users.import_csv(
        "\ufeffusername,password,role,groups\nann,longpassword1,rater,night;de\ncid,longpassword2,,night\n"
    )
    assert [(u.username, u.role) for u in made] == [("ann", Role.rater), ("cid", Role.rater)]
    assert {g.name: g.members for g in admin.rating.groups()} == {"de": ["ann"], "night": ["ann", "cid"]}
    with pytest.raises(Conflict, match="already exist: ann"):
        admin.users.import_csv("username,password\nann,longpassword1\n")
    assert em.users.authenticate("cid", "longpassword2").role == Role.rater
    with em.session() as s:
        assert s.scalar(select(User.id).where(User.username == "cid")) is not None
        assert len(s.scalars(select(RaterGroupMember)).all()) == 3
