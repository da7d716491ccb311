"""uvicorn around the app: workers, TLS, timeouts, concurrency cap, the bind rule."""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipelines.reward_service.app import CONFIG_ENV, TOKEN_ENV, ServiceConfig, create_app
from pipelines.reward_service.auth import check_env_token, is_loopback

if TYPE_CHECKING:
    from earmark.api import Earmark

H11_MAX_INCOMPLETE_EVENT = 64 * 1024  # request line + headers; bodies are capped by the app


def conninfo_of(em: Earmark) -> str:
    """libpq connection string of the store an Earmark client talks to."""
    return em.ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def count_active_tokens(conninfo: str) -> int:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*) FROM reward_tokens WHERE revoked_at IS NULL").fetchone()
        return int(row[0]) if row else 0


def check_bind(config: ServiceConfig, host: str, env_token: str | None) -> None:
    """Refuse to start without a usable token; beyond loopback only strong tokens (auth.py)."""
    if env_token:
        check_env_token(env_token, host)
    elif count_active_tokens(config.conninfo) == 0:
        raise ValueError(
            "no reward token: mint one with `earmark rm token NAME` (or set EARMARK_REWARD_TOKEN"
            f"{'' if is_loopback(host) else ' to >= 32 random characters'})"
        )


def uvicorn_options(config: ServiceConfig, ssl_certfile: str | None, ssl_keyfile: str | None) -> dict[str, Any]:
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise ValueError("TLS needs both --ssl-certfile and --ssl-keyfile")
    from pipelines.reward_service.http_protocol import OneWriteHttpToolsProtocol

    return {
        "http": OneWriteHttpToolsProtocol,  # httptools, each answer in one write
        "timeout_keep_alive": int(config.limits.keep_alive_timeout_s),
        "limit_concurrency": config.limits.max_connections,
        "h11_max_incomplete_event_size": H11_MAX_INCOMPLETE_EVENT,
        "access_log": False,  # the app writes one line per request, without credentials
        "server_header": False,
        "ssl_certfile": ssl_certfile,
        "ssl_keyfile": ssl_keyfile,
        "timeout_graceful_shutdown": 10,
    }


def log_config() -> dict[str, Any]:
    """stderr for everything; the access log (one line per request) through a buffered handler
    written out every 0.25 s (accesslog.py)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": "pipelines.reward_service.accesslog.SecondsCachedFormatter"}},
        "handlers": {
            "err": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"},
            "access": {
                "()": "pipelines.reward_service.accesslog.BufferedStreamHandler",
                "formatter": "plain",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["err"], "level": "INFO", "propagate": False},
            "earmark.reward": {"handlers": ["err"], "level": "INFO", "propagate": False},
            "earmark.reward.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
        },
    }


def _bound_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to (host, port), with SO_REUSEADDR and, if asked, SO_REUSEPORT."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket of its own with SO_REUSEPORT, bound in the worker that serves it."""
    sock = _bound_socket(host, port, reuse_port=True)
    try:
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class PerWorkerSocket:
    """Stands in for the listening socket uvicorn's supervisor hands each worker: unpickled in
    the worker (multiprocessing's spawn), it becomes that worker's own SO_REUSEPORT socket on the
    same port. The kernel then spreads connections over the workers by their address hash; with
    one shared socket, whichever worker wakes first accepts, and trainers' few long keep-alive
    connections can end up 2.7:1 on one worker (measured: such rounds up to ~20% slower).
    The supervisor's restarts, health pings and signals are uvicorn's own."""

    def __init__(self, host: str, port: int, backlog: int) -> None:
        self.host, self.port, self.backlog = host, port, backlog

    def __reduce__(self) -> tuple[Any, tuple[str, int, int]]:
        return _listening_socket, (self.host, self.port, self.backlog)


def _port_guard(host: str, port: int) -> socket.socket:
    """A socket that holds the port for the service's lifetime (bound, never listening, so it is
    given no connections). Fails, before any worker starts, when the port is in use, also by
    another earmark service (a plain bind first: SO_REUSEPORT alone would silently share it)."""
    try:
        _bound_socket(host, port, reuse_port=False).close()
        return _bound_socket(host, port, reuse_port=True)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port") from None


def reuse_port_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def run(
    config: ServiceConfig,
    host: str = "127.0.0.1",
    port: int = 5000,
    workers: int = 1,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Serve in the foreground (``earmark rm serve``) with ``workers`` processes."""
    import uvicorn

    env_token = os.environ.get(TOKEN_ENV) or None
    check_bind(config, host, env_token)
    os.environ[CONFIG_ENV] = config.model_dump_json()
    options: dict[str, Any] = {
        "factory": True,
        "host": host,
        "port": port,
        "workers": workers,
        "log_config": log_config(),
        **uvicorn_options(config, ssl_certfile, ssl_keyfile),
    }
    if workers <= 1 or not reuse_port_supported():
        uvicorn.run("pipelines.reward_service.app:create_app_from_env", **options)
        return
    from uvicorn.supervisors import Multiprocess

    ucfg = uvicorn.Config("pipelines.reward_service.app:create_app_from_env", **options)
    guard = _port_guard(host, port)
    try:
        Multiprocess(ucfg, sockets=[PerWorkerSocket(host, port, ucfg.backlog)]).run()  # type: ignore[list-item]
    finally:
        guard.close()


@dataclass
class ThreadedServer:
    url: str
    server: Any
    thread: threading.Thread

    def shutdown(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_in_thread(
    config: ServiceConfig,
    env_token: str | None = None,
    host: str = "127.0.0.1",
    port: int = 5000,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> ThreadedServer:
    """One worker in a background thread (tests, notebooks); returns once it accepts requests."""
    import uvicorn

    check_bind(config, host, env_token)
    ucfg = uvicorn.Config(
        create_app(config, env_token),
        host=host,
        port=port,
        log_config=None,
        log_level=logging.WARNING,
        **uvicorn_options(config, ssl_certfile, ssl_keyfile),
    )
    server = uvicorn.Server(ucfg)
    thread = threading.Thread(target=server.run, daemon=True, name="earmark-reward-service")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("reward service did not start; see the log")
        time.sleep(0.02)
    scheme = "https" if ssl_certfile else "http"
    return ThreadedServer(f"{scheme}://{host}:{port}", server, thread)
