"""Accounts: argon2id-hashed passwords, roles, login throttling. Every call checks the caller's role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from earmark.domain.enums import Role
from earmark.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from earmark.security import Principal, action, hash_password, needs_rehash, verify_password
from earmark.services.context import Service
from earmark.store.models import User

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{1,63}$"


@dataclass(frozen=True)
class UserInfo:
    id: int
    username: str
    role: Role
    active: bool
    cleared_for_aggregation: bool
    locked_until: datetime | None


def _info(u: User) -> UserInfo:
    return UserInfo(u.id, u.username, Role(u.role), u.active, u.cleared_for_aggregation, u.locked_until)


def _check_username(username: str) -> str:
    import re

    if not re.fullmatch(USERNAME_PATTERN, username or ""):
        raise InvalidInput(f"username {username[:40]!r} is invalid: use 2-64 letters, digits, '.', '_', '-', '@'")
    return username


class UserService(Service):
    @action("users.manage")
    def create(self, username: str, password: str, role: Role | str) -> UserInfo:
        self.ctx.require("users.manage")
        try:
            role = Role(role)
        except ValueError:
            raise InvalidInput(f"role {role!r} is unknown; use one of {', '.join(r.value for r in Role)}") from None
        _check_username(username)
        hashed = hash_password(password)

        def write(s: Session) -> UserInfo:
            if s.scalar(select(User.id).where(func.lower(User.username) == username.lower())):
                raise Conflict(f"user {username!r} already exists; pick another name or reset that user's password")
            u = User(username=username, password_hash=hashed, role=role.value)
            s.add(u)
            s.flush()
            self.ctx.audit(s, "users.create", "user", u.id, username=username, role=role.value)
            return _info(u)

        return self.ctx.tx(write)

    @action("users.manage")
    def ensure(self, username: str, password: str, role: Role | str) -> UserInfo:
        """Create the user unless it exists (seeding demo accounts is idempotent)."""
        existing = self.find(username)
        return existing if existing is not None else self.create(username, password, role)

    @action("users.lookup")
    def find(self, username: str) -> UserInfo | None:
        row = self.ctx.tx(lambda s: s.scalar(select(User).where(func.lower(User.username) == username.lower())))
        return _info(row) if row else None

    @action("users.manage")
    def list(self) -> list[UserInfo]:
        self.ctx.require("users.manage")
        return [_info(u) for u in self.ctx.tx(lambda s: s.scalars(select(User).order_by(User.id)).all())]

    @action("users.manage")
    def set_active(self, user_id: int, active: bool) -> None:
        self.ctx.require("users.manage")

        def write(s: Session) -> None:
            u = s.get(User, user_id, with_for_update=True)
            if u is None:
                raise NotFound(f"user {user_id} does not exist")
            u.active = active
            self.ctx.audit(s, "users.set_active", "user", user_id, active=active)

        self.ctx.tx(write)

    @action("judgments.review")
    def set_cleared(self, user_id: int, cleared: bool, note: str = "") -> None:
        """Reviewers clear (or exclude) a flagged rater's judgments from aggregation."""
        self.ctx.require("judgments.review")

        def write(s: Session) -> None:
            u = s.get(User, user_id, with_for_update=True)
            if u is None:
                raise NotFound(f"user {user_id} does not exist")
            u.cleared_for_aggregation = cleared
            self.ctx.audit(s, "raters.clear" if cleared else "raters.exclude", "user", user_id, note=note[:500])

        self.ctx.tx(write)

    @action("users.login")
    def authenticate(self, username: str, password: str) -> Principal:
        """Check a password; after ``login_max_failures`` misses in a row the account waits
        ``login_lockout_seconds`` (throttling beats online guessing). The error never says whether
        the user exists."""
        cfg = self.ctx.settings
        generic = AuthenticationFailed("wrong username or password")
        if not username or len(username) > 200 or len(password) > 1024:
            raise generic

        def check(s: Session) -> Principal | Exception:
            u = s.scalar(select(User).where(func.lower(User.username) == username.lower()).with_for_update())
            now = datetime.now(UTC)
            if u is None or not u.active:
                verify_password(None, password)  # similar timing for unknown users
                return generic
            if u.locked_until and u.locked_until > now:
                wait = int((u.locked_until - now).total_seconds()) + 1
                return AuthenticationFailed(f"too many failed logins; try again in {wait} s", code="login_throttled")
            if not verify_password(u.password_hash, password):
                u.failed_logins += 1
                if u.failed_logins >= cfg.login_max_failures:
                    u.locked_until = now + timedelta(seconds=cfg.login_lockout_seconds)
                    u.failed_logins = 0
                    self.ctx.audit(s, "auth.throttled", "user", u.id)
                return generic
            u.failed_logins = 0
            u.locked_until = None
            if needs_rehash(u.password_hash or ""):
                u.password_hash = hash_password(password)
            return Principal(u.id, u.username, Role(u.role))

        # Failures are committed (the counter must persist), then raised.
        result = self.ctx.tx(check)
        if isinstance(result, Exception):
            raise result
        return result
