"""Accounts: argon2id-hashed passwords, roles, login throttling. Every call checks the caller's role."""

from __future__ import annotations

import builtins
import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select, text
from sqlalchemy.orm import Session

from earmark.domain.enums import Role
from earmark.errors import AuthenticationFailed, Conflict, InvalidInput, NotFound
from earmark.security import MIN_PASSWORD_CHARS, Principal, action, hash_password, needs_rehash, verify_password
from earmark.services.context import Service
from earmark.store.models import LoginThrottle, RaterGroupMember, User

MAX_IMPORT_ROWS = 5000
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
    def authenticate(
        self, username: str, password: str, client: str | None = None, device: str | None = None
    ) -> Principal:
        """Check a password, throttled in the database (shared by every app replica) per key:

        - the pair (device, user name): ``login_max_failures`` misses in a row make that pair wait
          ``login_lockout_seconds``; a guesser on another device cannot lock a rater out;
        - the client alone (``login_max_failures_per_client`` misses across names);
        - the user name alone, at ``login_max_failures_per_client`` misses from any client (slows a
          distributed guesser on one account).

        The keys are hashes of the typed name, so an unknown name is throttled exactly like a real one
        and no answer (message, code, timing) tells which names exist. Every failure is audited.
        ``client`` is the caller's address and ``device`` a per-browser id from the edge (None from the
        API/CLI: one shared client; no device: the address stands in for it)."""
        cfg = self.ctx.settings
        generic = AuthenticationFailed("wrong username or password")
        if not username or len(username) > 200 or len(password) > 1024:
            raise generic
        name = username.strip().lower()
        who = client or "unknown-client"
        keys = {
            _throttle_key("pair", device or who, name): cfg.login_max_failures,
            _throttle_key("client", who): cfg.login_max_failures_per_client,
            _throttle_key("name", name): cfg.login_max_failures_per_client,
        }
        client_tag = _throttle_key("tag", who)[:16]

        def check(s: Session) -> Principal | Exception:
            now = datetime.now(UTC)
            rows = {
                t.key: t
                for t in s.scalars(
                    select(LoginThrottle).where(LoginThrottle.key.in_(list(keys))).with_for_update()
                ).all()
            }
            locked = [t.locked_until for t in rows.values() if t.locked_until and t.locked_until > now]
            u = s.scalar(select(User).where(func.lower(User.username) == name))
            if locked:
                wait = int((max(locked) - now).total_seconds()) + 1
                self.ctx.audit(
                    s,
                    "auth.failed",
                    "user",
                    u.id if u else None,
                    username=username[:64],
                    client=client_tag,
                    reason="throttled",
                )
                return AuthenticationFailed(
                    f"too many failed logins from this device; try again in {wait} s", code="login_throttled"
                )
            # an unknown or inactive name costs one full hash verification too (no timing tell)
            ok = verify_password(u.password_hash if u is not None and u.active else _dummy_hash(), password)
            if not ok or u is None or not u.active:
                for key, limit in keys.items():
                    t = rows.get(key)
                    if t is None:
                        t = LoginThrottle(key=key, failures=0)
                        s.add(t)
                    t.failures = (t.failures or 0) + 1
                    t.updated_at = now
                    if t.failures >= limit:
                        t.locked_until = now + timedelta(seconds=cfg.login_lockout_seconds)
                        t.failures = 0
                        self.ctx.audit(s, "auth.throttled", "login", key[:16], client=client_tag)
                self.ctx.audit(
                    s,
                    "auth.failed",
                    "user",
                    u.id if u else None,
                    username=username[:64],
                    client=client_tag,
                    reason="bad_credentials",
                )
                return generic
            pair = rows.get(_throttle_key("pair", device or who, name))
            if pair is not None:
                s.delete(pair)  # a success clears this device's misses for this name only
            if needs_rehash(u.password_hash or ""):
                u.password_hash = hash_password(password)
            return Principal(u.id, u.username, Role(u.role))

        # Failures are committed (the counters and the audit rows must persist), then raised.
        result = self.ctx.tx(check)
        if isinstance(result, Exception):
            raise result
        return result

    @action("app.secrets")
    def session_key(self) -> bytes:
        """The key that signs app session cookies: ``EARMARK_SESSION_SECRET``, else one generated once and
        kept in the database so that every replica signs and checks with the same key."""
        if self.ctx.settings.session_secret is not None:
            return self.ctx.settings.session_secret.get_secret_value().encode()

        def get(c: Connection) -> str:
            c.execute(
                text("INSERT INTO app_secrets (name, value) VALUES ('session_key', :v) ON CONFLICT DO NOTHING"),
                {"v": secrets.token_hex(32)},
            )
            return str(c.execute(text("SELECT value FROM app_secrets WHERE name = 'session_key'")).scalar_one())

        return self.ctx.connection_tx(get).encode()

    @action("users.manage")
    def import_csv(self, data: str | bytes, *, default_role: Role | str = Role.rater) -> builtins.list[UserInfo]:
        """Create users from CSV with a header ``username,password[,role][,groups]`` (groups separated by
        ``;``). All rows are checked first and the import is all-or-nothing; an error names the line."""
        self.ctx.require("users.manage")
        import csv
        import io

        from earmark.services.rating import RatingService

        text_ = data.decode("utf-8-sig") if isinstance(data, bytes) else data.lstrip("\ufeff")
        reader = csv.DictReader(io.StringIO(text_))
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "username" not in fields or "password" not in fields:
            raise InvalidInput(
                "the CSV needs a header line with at least 'username' and 'password' columns "
                "(optional: 'role', 'groups' separated by ';')"
            )
        rows: list[tuple[str, str, Role, list[str]]] = []
        seen: set[str] = set()
        for line, raw in enumerate(reader, start=2):
            rec = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            if not any(rec.values()):
                continue
            name = rec.get("username", "")
            try:
                _check_username(name)
                role = Role(rec.get("role") or Role(default_role))
                if len(rec.get("password", "")) < MIN_PASSWORD_CHARS:
                    raise InvalidInput(f"password must have at least {MIN_PASSWORD_CHARS} characters")
            except ValueError:
                raise InvalidInput(
                    f"CSV line {line}: role {rec.get('role')!r} is unknown; use one of "
                    f"{', '.join(r.value for r in Role)}"
                ) from None
            except InvalidInput as exc:
                raise InvalidInput(f"CSV line {line}: {exc.message}") from None
            if name.lower() in seen:
                raise InvalidInput(f"CSV line {line}: user {name!r} appears twice; keep one line per user")
            seen.add(name.lower())
            groups = [g.strip() for g in rec.get("groups", "").split(";") if g.strip()]
            rows.append((name, rec["password"], role, groups))
        if not rows:
            raise InvalidInput("the CSV has no user rows below its header")
        if len(rows) > MAX_IMPORT_ROWS:
            raise InvalidInput(f"the CSV has {len(rows)} users; import at most {MAX_IMPORT_ROWS} at a time")
        hashed = [hash_password(pw) for _, pw, _, _ in rows]
        groups_svc = RatingService(self.ctx)

        def write(s: Session) -> builtins.list[UserInfo]:
            existing = set(
                s.scalars(select(func.lower(User.username)).where(func.lower(User.username).in_(list(seen)))).all()
            )
            if existing:
                raise Conflict(
                    f"these users already exist: {', '.join(sorted(existing))}; remove them from the CSV and import again"
                )
            out = []
            for (name, _, role, groups), h in zip(rows, hashed, strict=True):
                u = User(username=name, password_hash=h, role=role.value)
                s.add(u)
                s.flush()
                for g in groups:
                    gid = groups_svc.ensure_group(s, g)
                    s.add(RaterGroupMember(group_id=gid, user_id=u.id))
                out.append(_info(u))
            s.flush()
            self.ctx.audit(s, "users.import", "user", None, count=len(out), usernames=[u.username for u in out])
            return out

        return self.ctx.tx(write)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def _throttle_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
