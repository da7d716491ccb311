"""Named client tokens for the reward service.

``earmark rm token NAME`` mints a 256-bit random token (43 url-safe characters), stores only its
SHA-256 and prints the token once. A request authenticates with the token as Bearer
(``Authorization: Bearer <token>``) or as the password of HTTP Basic with any user name (what
stock OpenRLHF sends for ``http://user:<token>@host:port/get_reward``). The presented token is
hashed and the digest compared in constant time; tokens are never echoed, logged or stored.

Rule: a service bound beyond loopback only accepts strong tokens (>= 32 characters, ~128 bits or
more; minted tokens are 256 bits). A token from EARMARK_REWARD_TOKEN shorter than that is refused
at start-up unless the bind address is loopback (there: >= 16 characters).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from earmark.api import Earmark

STRONG_TOKEN_CHARS = 32
LOOPBACK_TOKEN_CHARS = 16
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
REALM = 'Basic realm="earmark-reward", charset="UTF-8"'


def mint_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def check_env_token(token: str, host: str) -> None:
    """The bind rule for a token given in the environment (minted tokens are always strong)."""
    need = LOOPBACK_TOKEN_CHARS if is_loopback(host) else STRONG_TOKEN_CHARS
    if len(token) < need or len(set(token)) < 8:
        where = "on loopback" if is_loopback(host) else f"when binding {host} (beyond 127.0.0.1)"
        raise ValueError(
            f"EARMARK_REWARD_TOKEN is too weak {where}: it needs >= {need} characters of random text"
            " (bearer token); mint one with `earmark rm token NAME` instead"
        )


def presented_token(authorization: str | None) -> str | None:
    """The token in an Authorization header (Bearer, or Basic with the token as password)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer":
        return value or None
    if scheme == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        return password or user or None  # http://<token>@host also works
    return None


class TokenTable:
    """digest -> token name, loaded from reward_tokens (plus an optional environment token).
    The service reloads it when TOKEN_CHANNEL is notified (create_token, revoke_token), so new
    tokens work and revoked ones stop without a restart."""

    def __init__(self, env_token: str | None = None, env_token_name: str = "env") -> None:
        self._fixed: dict[str, str] = {token_digest(env_token): env_token_name} if env_token else {}
        self._by_digest: dict[str, str] = dict(self._fixed)

    def __len__(self) -> int:
        return len(self._by_digest)

    def set_rows(self, rows: list[tuple[str, str]]) -> None:
        self._by_digest = {**{d: n for n, d in rows}, **self._fixed}

    def lookup(self, authorization: str | None) -> tuple[str | None, bool]:
        """(token name or None, whether a token was presented at all)."""
        token = presented_token(authorization)
        if token is None:
            return None, False
        digest = token_digest(token).encode()
        found = None
        for known, name in self._by_digest.items():  # every digest compared: time independent of which
            if hmac.compare_digest(known.encode(), digest):
                found = name
        return found, True


ACTIVE_TOKENS_SQL = "SELECT name, token_sha256 FROM reward_tokens WHERE revoked_at IS NULL"
# notified (payload: the token name) in the transaction that mints, rotates or revokes a token
TOKEN_CHANNEL = "earmark_reward_tokens"
NOTIFY_SQL = "SELECT pg_notify(:c, :n)"


# ---- management (the CLI): synchronous, through the platform's session -------------------------


def create_token(em: Earmark, name: str, replace: bool = False) -> str:
    from sqlalchemy import text

    from earmark.domain.limits import Limits
    from earmark.errors import Conflict, InvalidInput

    name = name.strip()
    if not name or len(name) > Limits.MAX_NAME_CHARS:
        raise InvalidInput(f"token name must be 1..{Limits.MAX_NAME_CHARS} characters")
    token = mint_token()
    with em.session() as s, s.begin():
        exists = s.execute(text("SELECT id FROM reward_tokens WHERE name = :n FOR UPDATE"), {"n": name}).first()
        if exists and not replace:
            raise Conflict(f"a reward token named {name!r} exists; pass --replace to rotate it or pick another name")
        if exists:
            s.execute(
                text(
                    "UPDATE reward_tokens SET token_sha256 = :d, revoked_at = NULL, created_at = now() WHERE name = :n"
                ),
                {"n": name, "d": token_digest(token)},
            )
        else:
            s.execute(
                text("INSERT INTO reward_tokens (name, token_sha256) VALUES (:n, :d)"),
                {"n": name, "d": token_digest(token)},
            )
        s.execute(text(NOTIFY_SQL), {"c": TOKEN_CHANNEL, "n": name})
    return token


def revoke_token(em: Earmark, name: str) -> None:
    from sqlalchemy import text

    from earmark.errors import NotFound

    with em.session() as s, s.begin():
        n = s.execute(
            text("UPDATE reward_tokens SET revoked_at = now() WHERE name = :n AND revoked_at IS NULL"), {"n": name}
        ).rowcount
        s.execute(text(NOTIFY_SQL), {"c": TOKEN_CHANNEL, "n": name})
    if not n:
        raise NotFound(f"no active reward token named {name!r}; list them with `earmark rm token --list`")


def list_tokens(em: Earmark) -> list[dict[str, Any]]:
    from sqlalchemy import text

    with em.session() as s:
        rows = s.execute(text("SELECT name, created_at, revoked_at FROM reward_tokens ORDER BY name")).all()
    return [{"name": r[0], "created_at": r[1], "revoked_at": r[2]} for r in rows]
