"""Engines, sessions and transactions. Services own transactions; query functions never commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from earmark.config import Settings
from earmark.errors import StoreUnavailable
from earmark.store import embedded

log = logging.getLogger(__name__)
T = TypeVar("T")
U = TypeVar("U")


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded.start(settings.home_dir)


def make_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    echo: bool = False,
    idle_in_transaction_timeout_s: int = 60,
) -> Engine:
    # pre_ping revalidates pooled connections, so a restarted server costs one reconnect, not an error.
    engine = create_engine(
        url,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        echo=echo,
        hide_parameters=True,  # bound values (password hashes, user text) never reach logs
    )

    @event.listens_for(engine, "connect")
    def _set_timeouts(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            # A lost client must not hold row locks (task leases) forever.
            # 0 turns it off (test fixtures hold one transaction open for a whole test).
            cur.execute(f"SET idle_in_transaction_session_timeout = '{int(idle_in_transaction_timeout_s)}s'")
        dbapi_conn.commit()

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error, nothing half-written."""
    with factory() as session, session.begin():
        yield session


def is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError)


# SQLSTATEs that end the session, not just the statement: class 08 (connection exception) and
# 57P01-57P03 (the server terminated or is shutting down the backend)
_SESSION_ENDING = ("08", "57P01", "57P02", "57P03")


def _connection_lost(exc: DBAPIError, conn: Connection) -> bool:
    """Whether the error took the connection with it. SQLAlchemy marks most such errors
    (``connection_invalidated``), but a send that finds the socket closed by a terminated backend
    can come back before psycopg has flagged the connection broken ("connection socket closed"):
    a client-side error (no SQLSTATE) or a session-ending SQLSTATE counts as lost too."""
    if exc.connection_invalidated or conn.invalidated or conn.closed:
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(_SESSION_ENDING)


def run_with_retry(
    factory: sessionmaker[Session],
    fn: Callable[[Session], T],
    *,
    max_wait_s: float = 60.0,
    base_delay: float = 0.25,
    max_delay: float = 4.0,
) -> T:
    """Run ``fn`` in a transaction, retrying the whole unit while the connection is down.

    Safe only for idempotent units (every earmark write is: unique keys and ON CONFLICT). The failed
    attempt rolled back, so a retry never doubles a write. Gives up after ``max_wait_s`` of outage
    (a database restart or fail-over usually takes seconds).

    A factory bound to a caller's connection (sessions join its transaction as a savepoint) runs
    the unit once: a failed unit is rolled back to its savepoint and raised, because the caller
    owns the transaction and a retry on a connection whose transaction is gone could only fail
    (PendingRollbackError) or, worse, run outside the caller's transaction.
    """
    if isinstance(factory.kw.get("bind"), Connection):
        try:
            with transaction(factory) as session:
                return fn(session)
        except DBAPIError as exc:
            bind = factory.kw["bind"]
            if not _connection_lost(exc, bind):
                raise  # a statement failed (timeout, constraint): its savepoint is rolled back
            if not bind.invalidated:  # as SQLAlchemy does on the disconnects it recognises: the
                bind.invalidate()  # caller's rollback is then a no-op and the pool drops it
            raise StoreUnavailable(
                "the connection to the preference store was lost inside the caller's transaction; "
                "nothing of it was kept: roll it back and run the whole unit again"
            ) from exc
    return _retrying(
        lambda: transaction(factory), fn, max_wait_s=max_wait_s, base_delay=base_delay, max_delay=max_delay
    )


def run_statement_with_retry(engine: Engine, fn: Callable[[Connection], T], *, max_wait_s: float = 60.0) -> T:
    """Run ``fn`` on an autocommit connection, retried like ``run_with_retry``.

    For hot paths whose unit of work is one SQL statement (a statement is atomic on its own): no
    BEGIN/COMMIT round trips and no ORM session, which matters when dozens of raters share a core.
    ``fn`` must issue a single writing statement (reads around it are fine)."""
    return _retrying(
        lambda: engine.connect().execution_options(isolation_level="AUTOCOMMIT"), fn, max_wait_s=max_wait_s
    )


def run_connection_tx_with_retry(engine: Engine, fn: Callable[[Connection], T], *, max_wait_s: float = 60.0) -> T:
    """Run ``fn`` in a transaction on a Core connection (no ORM session), retried like
    ``run_with_retry``: for hot paths of a few statements with checks between them."""
    return _retrying(engine.begin, fn, max_wait_s=max_wait_s)


def _retrying(
    open_unit: Callable[[], AbstractContextManager[U]],
    fn: Callable[[U], T],
    *,
    max_wait_s: float = 60.0,
    base_delay: float = 0.25,
    max_delay: float = 4.0,
) -> T:
    delay = base_delay
    deadline = time.monotonic() + max_wait_s
    attempt = 0
    while True:
        attempt += 1
        try:
            with open_unit() as unit:
                return fn(unit)
        except (OperationalError, DBAPIError) as exc:
            if not is_disconnect(exc):
                raise
            if time.monotonic() + delay > deadline:
                raise StoreUnavailable(
                    f"the preference store stayed unreachable for {max_wait_s:.0f}s ({attempt} attempts); "
                    "check that PostgreSQL is running (earmark services status)"
                ) from exc
            log.warning("store connection lost (attempt %d); retrying in %.2fs", attempt, delay)
            time.sleep(delay)
            delay = min(delay * 2, max_delay)
