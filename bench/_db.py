"""Benchmark plumbing: a throwaway database on the configured server, or the embedded one."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from earmark.store import embedded, migrate
from earmark.store.engine import make_engine


@contextmanager
def scratch_database(prefix: str = "earmark_bench") -> Iterator[str]:
    """EARMARK_BENCH_PG_URL, else the machine's server at 127.0.0.1:5432, else embedded pgserver."""
    admin_url = os.environ.get("EARMARK_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    try:
        eng = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        eng.connect().close()
    except Exception:
        admin_url = embedded.start(Path(tempfile.mkdtemp(prefix="earmark-bench-")))
        eng = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with eng.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with eng.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        eng.dispose()
