"""What every service needs: a session factory, the blob store, settings and the calling principal."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from earmark.blobs import LocalBlobStore, S3BlobStore
from earmark.config import Settings
from earmark.errors import PermissionDenied
from earmark.security import Principal, declared_action, require
from earmark.store.engine import run_connection_tx_with_retry, run_statement_with_retry, run_with_retry
from earmark.store.models import AuditLog

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    blobs: LocalBlobStore | S3BlobStore
    principal: Principal

    def as_principal(self, principal: Principal) -> ServiceContext:
        return replace(self, principal=principal)

    def require(self, action: str) -> None:
        require(self.principal, action)

    def tx(self, fn: Callable[[Session], T]) -> T:
        """Run one unit of work, retried as a whole if the database connection drops."""
        return run_with_retry(self.sessions, fn)

    def statement(self, fn: Callable[[Connection], T]) -> T:
        """Run a unit that is a single statement on an autocommit connection (hot paths), retried
        as a whole if the connection drops."""
        if (conn := self._caller_connection()) is not None:
            return self._in_savepoint(conn, fn)
        return run_statement_with_retry(self.engine, fn)

    def connection_tx(self, fn: Callable[[Connection], T]) -> T:
        """Run a unit of a few Core statements in one transaction (hot paths: no ORM session)."""
        if (conn := self._caller_connection()) is not None:
            return self._in_savepoint(conn, fn)
        return run_connection_tx_with_retry(self.engine, fn)

    def _caller_connection(self) -> Connection | None:
        """Sessions bound to a connection join the caller's transaction (as a savepoint); the Core
        hot paths must join it too, or they would not see the caller's uncommitted rows."""
        bind = self.sessions.kw.get("bind")
        return bind if isinstance(bind, Connection) else None

    @staticmethod
    def _in_savepoint(conn: Connection, fn: Callable[[Connection], T]) -> T:
        with conn.begin_nested():
            return fn(conn)

    def audit(self, session: Session, action: str, entity: str, entity_id: Any = None, **details: Any) -> None:
        session.add(
            AuditLog(
                actor_id=self.principal.user_id,
                action=action,
                entity=entity,
                entity_id=None if entity_id is None else str(entity_id),
                details=details,
            )
        )


class Service:
    """Base of every service. Each public method declares its action with
    ``@earmark.security.action``; one that does not is refused for everyone (deny by default)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in list(vars(cls).items()):
            if name.startswith("_") or not inspect.isfunction(member) or declared_action(member):
                continue
            setattr(cls, name, _undeclared(cls.__name__, name, member))


def _undeclared(owner: str, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def refused(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise PermissionDenied(
            f"{owner}.{name} declares no action, so it is refused (deny by default); "
            "decorate it with @action(...) from earmark.security"
        )

    refused.__earmark_undeclared__ = True  # type: ignore[attr-defined]
    return refused
