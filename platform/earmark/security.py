"""Principals, role checks and password hashing. Every service call names its principal."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from earmark.domain.enums import Role
from earmark.errors import InvalidInput, PermissionDenied

# OWASP's argon2id recommendation (m=19 MiB, t=2, p=1) is the floor; we use argon2-cffi's RFC 9106
# low-memory profile (m=64 MiB, t=3, p=4), which verifies in ~50 ms here: slow for guessing, fine for a login.
PASSWORD_HASHER = PasswordHasher(time_cost=3, memory_cost=65536, parallelism=4, hash_len=32, salt_len=16)
MIN_PASSWORD_CHARS = 8
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Principal:
    user_id: int | None
    username: str
    role: Role

    def has(self, *roles: Role) -> bool:
        return self.role in roles


# The API/CLI principal on an engineer's own machine; the annotation app never uses it.
SYSTEM = Principal(user_id=None, username="system", role=Role.engineer)

# What each role may do. Services check the action, not the role, so adding a role is one edit here.
PERMISSIONS: dict[str, frozenset[Role]] = {
    "catalog.write": frozenset({Role.engineer, Role.admin}),
    "catalog.read": frozenset({Role.engineer, Role.admin, Role.reviewer}),
    "rollouts.write": frozenset({Role.engineer, Role.admin}),
    "scores.write": frozenset({Role.engineer, Role.admin}),
    "data.read": frozenset({Role.engineer, Role.admin, Role.reviewer}),
    "users.manage": frozenset({Role.admin}),
    "campaigns.manage": frozenset({Role.admin, Role.engineer}),
    "tasks.rate": frozenset({Role.rater, Role.reviewer, Role.admin}),
    "judgments.review": frozenset({Role.reviewer, Role.admin}),
    "dashboard.view": frozenset({Role.reviewer, Role.admin, Role.engineer}),
    "training.run": frozenset({Role.engineer, Role.admin}),
    # every signed-in role: the rater page lists open campaigns; logging in needs no role yet
    "campaigns.view": frozenset({Role.rater, Role.reviewer, Role.admin, Role.engineer}),
    "users.login": frozenset({Role.rater, Role.reviewer, Role.admin, Role.engineer}),
    "users.lookup": frozenset({Role.engineer, Role.admin}),
    # who judged what (rater user names) for a training row: not for raters
    "data.lineage": frozenset({Role.engineer, Role.admin}),
    # the app's cookie-signing key: the app process (system principal) and admins, never a signed-in rater
    "app.secrets": frozenset({Role.engineer, Role.admin}),
}


def require(principal: Principal, action: str) -> None:
    allowed = PERMISSIONS.get(action)
    if allowed is None:
        raise KeyError(f"unknown action {action!r}; add it to earmark.security.PERMISSIONS")
    if principal.role not in allowed:
        raise PermissionDenied(
            f"{principal.username} (role {principal.role}) may not {action}; "
            f"ask an admin for one of: {', '.join(sorted(r.value for r in allowed))}"
        )


def action(name: str) -> Callable[[F], F]:
    """Declare the action a public service method performs; the call is refused unless the
    principal's role may perform it. Service methods without one are refused (deny by default,
    see ``earmark.services.context.Service``)."""
    if name not in PERMISSIONS:
        raise KeyError(f"unknown action {name!r}; add it to earmark.security.PERMISSIONS")

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            require(self.ctx.principal, name)
            return fn(self, *args, **kwargs)

        checked.__earmark_action__ = name  # type: ignore[attr-defined]
        return checked  # type: ignore[return-value]

    return decorate


def declared_action(method: Any) -> str | None:
    return getattr(method, "__earmark_action__", None)


def allowed_roles(action: str) -> Iterable[Role]:
    return PERMISSIONS[action]


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > 1024:
        raise InvalidInput("password is longer than 1024 characters")
    return PASSWORD_HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        return False
    try:
        return PASSWORD_HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return PASSWORD_HASHER.check_needs_rehash(stored_hash)
