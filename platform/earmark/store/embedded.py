"""The embedded default store: a private PostgreSQL 16 from the ``pgserver`` wheel under EARMARK_HOME.

The server outlives the process that started it (``cleanup_mode=None``) so CLI commands, the
Streamlit app and Ray actors on this machine share one store; ``earmark services down`` stops it.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def _prepare_env() -> None:
    # pgserver keeps a lock file under XDG_RUNTIME_DIR; unset on CI and in containers.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path("/tmp") / f"earmark-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def pgdata_dir(home: Path) -> Path:
    return home / "pg"


def start(home: Path) -> str:
    """Start (or attach to) the embedded server and return a SQLAlchemy URL for it."""
    _prepare_env()
    import pgserver  # imported lazily: it is only needed for the embedded default

    pgdata = pgdata_dir(home)
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    # get_server caches one handle per data directory: after a stop in this process it would hand
    # back the stale handle, so make sure the server behind it is really up.
    if not is_running(home):
        with server._lock:
            server.ensure_postgres_running()
    uri = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg://", 1)


def is_running(home: Path) -> bool:
    pid_file = pgdata_dir(home) / "postmaster.pid"
    if not pid_file.exists():
        return False
    try:
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, 0)
        return True
    except (ValueError, ProcessLookupError, IndexError):
        return False
    except PermissionError:
        return True


def stop(home: Path) -> bool:
    """Stop the embedded server; returns False when it was not running."""
    if not is_running(home):
        return False
    _prepare_env()
    from pgserver.postgres_server import pg_ctl

    user = "pgserver" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata_dir(home), user=user)
    except subprocess.CalledProcessError as exc:  # already gone between the check and the stop
        log.warning("embedded PostgreSQL stop reported %s", exc.returncode)
    return True
