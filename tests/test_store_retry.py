"""The retry path when a unit joins the caller's transaction (a savepoint, as in the test fixture
and any caller that binds sessions to its own connection): a failure rolls back to the savepoint
and is raised once, clearly; the caller's transaction stays usable where it can be."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from earmark.errors import StoreUnavailable
from earmark.store.engine import make_engine, run_with_retry


@pytest.fixture
def joined(server_url):
    engine = make_engine(server_url, pool_size=2, idle_in_transaction_timeout_s=0)
    conn = engine.connect()
    outer = conn.begin()
    factory = sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    yield engine, conn, factory
    if outer.is_active:
        outer.rollback()
    conn.close()
    engine.dispose()


def test_failed_unit_rolls_back_to_its_savepoint_and_the_caller_continues(joined) -> None:
    engine, conn, factory = joined
    conn.execute(text("CREATE TEMP TABLE t (x int)"))
    conn.execute(text("INSERT INTO t VALUES (1)"))
    calls = []

    def unit(s):
        calls.append(1)
        s.execute(text("INSERT INTO t VALUES (2)"))
        s.execute(text("SET LOCAL statement_timeout = '50ms'"))
        s.execute(text("SELECT pg_sleep(2)"))  # QueryCanceled: an OperationalError, not a disconnect

    with pytest.raises(OperationalError):
        run_with_retry(factory, unit, max_wait_s=5)
    assert calls == [1]  # run once: never retried inside the caller's transaction
    # the savepoint was rolled back: the caller's row is there, the unit's is not, and it goes on
    assert conn.execute(text("SELECT array_agg(x) FROM t")).scalar() == [1]
    assert run_with_retry(factory, lambda s: s.execute(text("SELECT count(*) FROM t")).scalar()) == 1


def test_lost_connection_inside_a_joined_transaction_is_reported_not_retried(joined, server_url) -> None:
    engine, conn, factory = joined
    pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    killer = make_engine(server_url)
    with killer.connect() as k:
        k.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
    killer.dispose()
    start = time.monotonic()
    with pytest.raises(StoreUnavailable, match="inside the caller's transaction"):
        run_with_retry(factory, lambda s: s.execute(text("SELECT 1")).scalar(), max_wait_s=30)
    assert time.monotonic() - start < 10  # no 30 s of futile retries, no PendingRollbackError


def test_fixture_engines_have_no_idle_in_transaction_timeout(em) -> None:
    with em.session() as s:
        assert s.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "0"


def test_session_ending_errors_count_as_a_lost_connection(joined) -> None:
    """A send that finds the socket closed can fail before psycopg flags the connection broken
    (no SQLSTATE, "connection socket closed"): lost, like a terminated backend (57P01); a
    cancelled statement (57014) is not."""
    import psycopg
    from sqlalchemy.exc import OperationalError as SAOperationalError

    from earmark.store.engine import _connection_lost

    _, conn, _ = joined

    def wrapped(orig: Exception) -> SAOperationalError:
        return SAOperationalError("SAVEPOINT sa_savepoint_1", {}, orig)

    assert _connection_lost(wrapped(psycopg.OperationalError("connection socket closed")), conn)
    assert _connection_lost(wrapped(psycopg.errors.AdminShutdown("terminating connection")), conn)
    assert not _connection_lost(wrapped(psycopg.errors.QueryCanceled("canceling statement")), conn)
    assert not conn.invalidated
