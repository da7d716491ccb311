"""Per-browser-session state of the annotation app: the store connection, who is logged in, guards.

One ``Earmark`` connection per app process (``st.cache_resource``, keyed by the store it points
at); each browser session binds it to its logged-in principal with ``as_principal``, so every
service call checks that person's role. Pages call ``page_guard`` first: a page that is not in a
user's navigation is refused even if a session reaches it another way.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import streamlit as st

from earmark.api import Earmark, connect
from earmark.config import ENV_PREFIX, Settings
from earmark.domain.enums import Role
from earmark.errors import EarmarkError, PermissionDenied, StoreUnavailable
from earmark.security import PERMISSIONS, Principal

AUTH_KEY = "auth"
FLASH_KEY = "flash"
COOKIE_KEY = "_session_cookie"  # what page_support should do with the cookie on this run
RESTORED_KEY = "restored"  # set when this browser session's login came back from the cookie


@st.cache_resource(show_spinner="Connecting to the preference store…", on_release=lambda em: em.close())
def _client(database_url: str | None, blob_url: str | None, home: str) -> Earmark:
    # Keyed by the store it points at, so a test (or an operator) switching EARMARK_DATABASE_URL
    # gets its own connection instead of a stale one.
    return connect(Settings())


def settings() -> Settings:
    """This process's settings. Building ``Settings`` reads and validates every field (about 5 ms,
    which every rerun paid several times), so it is built once per distinct ``EARMARK_*`` environment:
    a test or an operator that changes the environment still gets fresh settings."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    return _settings_for(env, os.getcwd())


@functools.lru_cache(maxsize=8)
def _settings_for(env: tuple[tuple[str, str], ...], cwd: str) -> Settings:
    return Settings()


def client() -> Earmark:
    """The process-wide connection (principal: system). Pages use ``current()`` instead."""
    cfg = settings()
    url = cfg.database_url.get_secret_value() if cfg.database_url else None
    return _client(url, cfg.blob_url, str(cfg.home_dir))


@dataclass(frozen=True)
class Login:
    principal: Principal
    login_at: float
    via: str  # "password" or "oidc"


@st.cache_resource(show_spinner=False)
def _signing_key(database_url: str | None) -> bytes:
    return client().users.session_key()


def _key() -> bytes:
    cfg = settings()
    return _signing_key(cfg.database_url.get_secret_value() if cfg.database_url else None)


def sign_session(principal: Principal, login_at: float, ttl: int) -> str:
    """``<payload>.<hmac>``: user id, name and expiry, signed with the replicas' shared key."""
    payload = base64.urlsafe_b64encode(
        json.dumps({"u": principal.user_id, "n": principal.username, "t": login_at, "e": login_at + ttl}).encode()
    ).decode()
    mac = hmac.new(_key(), payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify_session(token: str) -> tuple[int, str, float] | None:
    """(user id, user name, login time) of a valid, unexpired token; None otherwise."""
    try:
        payload, mac = token.rsplit(".", 1)
        if not hmac.compare_digest(hmac.new(_key(), payload.encode(), hashlib.sha256).hexdigest(), mac):
            return None
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
        if float(data["e"]) < time.time():
            return None
        return int(data["u"]), str(data["n"]), float(data["t"])
    except (ValueError, KeyError, TypeError):
        return None


def login(principal: Principal, via: str = "password") -> None:
    now = time.time()
    st.session_state[AUTH_KEY] = Login(principal, now, via)
    if via == "password":
        st.session_state[COOKIE_KEY] = {"set_session": sign_session(principal, now, settings().session_ttl_seconds)}


def cookie_action() -> dict:
    """What ``browser.page_support`` should do with the session cookie on this run (once)."""
    action = st.session_state.pop(COOKIE_KEY, None) or {}
    return {**action, "max_age": settings().session_ttl_seconds}


def client_address() -> str | None:
    """The caller's address for throttling; X-Forwarded-For's first hop only when EARMARK_TRUST_FORWARDED_FOR."""
    if settings().trust_forwarded_for:
        fwd = st.context.headers.get("X-Forwarded-For")
        if isinstance(fwd, str) and fwd.split(",")[0].strip():
            return fwd.split(",")[0].strip()[:64]
    ip = st.context.ip_address
    return ip if isinstance(ip, str) else None


def device_id() -> str | None:
    from annotation_ui.browser import DEVICE_COOKIE

    v = st.context.cookies.get(DEVICE_COOKIE)
    return v[:64] if isinstance(v, str) and v else None


def logout(message: str | None = None) -> None:
    """Forget everything this browser session held; its leases (the item on screen and the one
    prepared next) go straight back to the pool instead of lapsing minutes later."""
    rate = st.session_state.get("rate")
    auth = st.session_state.get(AUTH_KEY)
    if rate and auth:
        tasks = client().as_principal(auth.principal).tasks
        try:
            for lease in tasks.claim(rate["campaign_id"], want=0):  # want=0: list held leases, take none
                tasks.release(lease.task_id, lease.lease_token)
        except EarmarkError:
            pass  # they lapse on their own within lease_seconds
    from annotation_ui.browser import SESSION_COOKIE

    st.session_state.clear()
    st.session_state[COOKIE_KEY] = {"clear_session": True}
    token = st.context.cookies.get(SESSION_COOKIE)
    if (
        isinstance(token, str) and token
    ):  # this connection still carries the cookie it opened with: do not log back in from it
        st.session_state["_cookie_rejected"] = token
    if message:
        flash("info", message)


def current_login() -> Login | None:
    """The session's login, or None when absent, expired, deactivated or changed role."""
    auth: Login | None = st.session_state.get(AUTH_KEY)
    if auth is None:
        auth = _from_cookie()
        if auth is None:
            return None
    ttl = settings().session_ttl_seconds
    if time.time() - auth.login_at > ttl:
        logout(f"Your session expired after {ttl // 60} minutes; log in again.")
        return None
    # Re-read the account on every run: an admin's deactivation or role change takes effect at once.
    info = client().users.find(auth.principal.username)
    if info is None or not info.active:
        logout("Your account was deactivated; ask an admin.")
        return None
    if info.role != auth.principal.role:
        auth = Login(Principal(info.id, info.username, info.role), auth.login_at, auth.via)
        st.session_state[AUTH_KEY] = auth
    return auth


def _from_cookie() -> Login | None:
    """A reload (or a restarted replica) starts a new Streamlit session: the signed cookie logs back in."""
    from annotation_ui.browser import SESSION_COOKIE

    token = st.context.cookies.get(SESSION_COOKIE)
    if not isinstance(token, str) or not token or st.session_state.get("_cookie_rejected") == token:
        return None
    found = verify_session(token)
    if found is None:
        st.session_state["_cookie_rejected"] = token
        return None
    user_id, username, login_at = found
    info = client().users.find(username)
    if info is None or info.id != user_id:
        st.session_state["_cookie_rejected"] = token
        return None
    auth = Login(Principal(info.id, info.username, info.role), login_at, "cookie")
    st.session_state[AUTH_KEY] = auth
    st.session_state[RESTORED_KEY] = True
    return auth


def allowed(principal: Principal, action: str) -> bool:
    return principal.role in PERMISSIONS[action]


_this_run = threading.local()


@contextmanager
def login_checked(auth: Login | None) -> Iterator[None]:
    """The router has just checked the login (``current_login``) for this script run: the page it
    runs inside this block reuses that check instead of reading the account a second time."""
    _this_run.auth = auth
    try:
        yield
    finally:
        _this_run.auth = None


def page_guard(action: str) -> tuple[Principal, Earmark]:
    """Stop the page unless the session's user may do ``action``; returns the bound services."""
    auth = getattr(_this_run, "auth", None) or current_login()
    if auth is None:
        st.error("Log in first.")
        st.stop()
        raise AssertionError("unreachable: st.stop() ends the script run")
    if not allowed(auth.principal, action):
        st.error(f"Your role ({auth.principal.role.value}) may not open this page.")
        st.stop()
    return auth.principal, client().as_principal(auth.principal)


def fragment_guard(principal: Principal, action: str) -> bool:
    """For a fragment of a page: on a fragment-only rerun (the router did not run), re-check the
    login as ``page_guard`` would (expiry, deactivation, role); if anything changed, rerun the
    whole app so the router and the page's own guard decide what to show. True: go on."""
    if getattr(_this_run, "auth", None) is not None:
        return True  # a full run: the router has just checked
    auth = current_login()
    if auth is None or auth.principal != principal or not allowed(auth.principal, action):
        st.rerun(scope="app")
        return False
    return True


def flash(kind: str, message: str) -> None:
    """A message that survives the rerun that follows an action (st.rerun would erase st.error)."""
    st.session_state.setdefault(FLASH_KEY, []).append((kind, message))


def show_flashes() -> None:
    for kind, message in st.session_state.pop(FLASH_KEY, []):
        getattr(st, kind)(message)


@contextmanager
def service_errors(what: str) -> Iterator[None]:
    """Domain errors become one clear message on the page instead of a traceback."""
    try:
        yield
    except PermissionDenied as exc:
        st.error(f"Not allowed: {exc.message}")
    except StoreUnavailable as exc:
        st.error(f"The preference store is unreachable while trying to {what}: {exc.message}. Try again shortly.")
    except EarmarkError as exc:
        st.error(f"Could not {what}: {exc.message}")


def role_label(role: Role) -> str:
    return {Role.rater: "Rater", Role.reviewer: "Reviewer", Role.admin: "Admin", Role.engineer: "Engineer"}[role]
