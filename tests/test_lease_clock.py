"""Lease time is the database's: claims, heartbeats and the late-submit rule all read now() in SQL.

The app's clock is shifted hours away (time-machine) to prove it plays no part: a machine whose
clock is off must neither cut a live lease short nor forgive a lapsed one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import text

from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate

ADMIN = Principal(None, "admin", Role.admin)
ANSWER = {
    "choice": "A",
    "strength": 2,
    "ratings": {"prosody": 4, "persona_consistency": 3, "correctness": 5},
    "listen_ms": {"A": 1200, "B": 900},
}


@pytest.fixture
def leased(em):
    seed_rollouts(em)
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="clock", overlap=1, gold_ratio=0.0))
    rita = em.as_principal(make_user(em, "rita"))
    return em, rita, rita.tasks.claim(camp.id, want=1)[0]


def _db_now(em) -> datetime:
    with em.session() as s:
        return s.scalar(text("SELECT now()"))


def _expiry(em, task_id: int) -> datetime:
    with em.session() as s:
        return s.scalar(text("SELECT lease_expires_at FROM tasks WHERE id = :i"), {"i": task_id})


@pytest.mark.parametrize("skew", [timedelta(hours=3), -timedelta(hours=3)], ids=["app-ahead", "app-behind"])
def test_heartbeat_extends_from_the_database_clock(leased, skew: timedelta) -> None:
    em, rita, lease = leased
    lease_s = em.settings.lease_seconds
    with time_machine.travel(datetime.now(UTC) + skew, tick=True):
        new_expiry = rita.tasks.heartbeat(lease.task_id, lease.lease_token)
    assert new_expiry == _expiry(em, lease.task_id)
    assert abs((new_expiry - _db_now(em)) - timedelta(seconds=lease_s)) < timedelta(seconds=30)


def test_live_lease_is_not_late_when_the_app_clock_runs_ahead(leased) -> None:
    em, rita, lease = leased
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=3), tick=True):
        res = rita.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), ANSWER)
    assert not res.late


def test_lapsed_lease_is_late_when_the_app_clock_runs_behind(leased) -> None:
    em, rita, lease = leased
    with em.session() as s, s.begin():
        s.execute(
            text("UPDATE tasks SET lease_expires_at = now() - interval '1 minute' WHERE id = :i"), {"i": lease.task_id}
        )
    with time_machine.travel(datetime.now(UTC) - timedelta(hours=3), tick=True):
        res = rita.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), ANSWER)
    assert res.late


def test_claim_heartbeat_and_submit_hold_no_app_clock_arithmetic() -> None:
    import inspect

    from earmark.services import tasks

    src = inspect.getsource(tasks.TaskService)
    assert "datetime.now" not in src and "time.time" not in src
