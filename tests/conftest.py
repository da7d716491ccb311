"""Shared fixtures: real PostgreSQL (the machine's server and the embedded pgserver), real S3.

Store tests run each test inside an outer transaction that is rolled back at the end; services
commit into SAVEPOINTs (``join_transaction_mode="create_savepoint"``) so they behave exactly as in
production. Tests that need real commits (threads, Ray, restarts) use ``committed_em`` instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ./run: spinning OpenMP threads on shared cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from earmark.api import Earmark  # noqa: E402
from earmark.blobs import LocalBlobStore, S3BlobStore  # noqa: E402
from earmark.config import Settings  # noqa: E402
from earmark.security import SYSTEM  # noqa: E402
from earmark.services.context import ServiceContext  # noqa: E402
from earmark.store import embedded, migrate  # noqa: E402
from earmark.store.engine import make_engine  # noqa: E402
from earmark.store.models import Base  # noqa: E402

pytest_plugins = ["ci_guard"]  # CI=1: a skip for want of chromium or PostgreSQL is a failure

REPO = Path(__file__).resolve().parents[1]
# Browser tests wait on conditions (selectors, expect) for up to this long: a loaded machine may take
# a minute to serve a Streamlit rerun, and waiting longer costs nothing when the page is quick.
BROWSER_TIMEOUT_MS = 180_000
# The machine's PostgreSQL (trust auth on 127.0.0.1 here and in CI); override for other set-ups.
DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
_admin_url: list[str] = []


def server_admin_url() -> str:
    """EARMARK_TEST_PG_URL, else the machine's server; on a laptop without one, a second embedded
    pgserver stands in so `./run test` needs no set-up (CI always has the real server)."""
    if _admin_url:
        return _admin_url[0]
    url = os.environ.get("EARMARK_TEST_PG_URL", DEFAULT_SERVER_URL)
    try:
        probe = create_engine(url, connect_args={"connect_timeout": 3})
        with probe.connect():
            pass
        probe.dispose()
    except Exception:
        if "EARMARK_TEST_PG_URL" in os.environ or os.environ.get("CI"):
            raise
        import tempfile
        import warnings

        warnings.warn(f"no PostgreSQL at {DEFAULT_SERVER_URL}; using an embedded pgserver instead", stacklevel=1)
        url = embedded.start(Path(tempfile.mkdtemp(prefix="earmark-standin-")))
    _admin_url.append(url)
    return url


def _create_database(admin_url: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def fresh_database(prefix: str = "earmark_test") -> tuple[str, Callable[[], None]]:
    admin = server_admin_url()
    url = _create_database(admin, prefix)
    return url, lambda: _drop_database(admin, url)


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """A fresh, migrated database on the machine's PostgreSQL server."""
    url, drop = fresh_database()
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    drop()


@pytest.fixture(scope="session")
def embedded_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded pgserver PostgreSQL 16, as `earmark` starts it with no EARMARK_DATABASE_URL."""
    home = tmp_path_factory.mktemp("embedded-home")
    url = embedded.start(home)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield url
    embedded.stop(home)


@pytest.fixture(params=["server", "embedded"])
def any_pg_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def _rolled_back_em(url: str, blob_root: Path) -> Iterator[Earmark]:
    # The outer transaction stays open for the whole test (idle while Python computes): the
    # server-side idle-in-transaction timeout would kill it on a loaded machine, so it is off here.
    engine = make_engine(url, pool_size=2, idle_in_transaction_timeout_s=0)
    conn = engine.connect()
    outer = conn.begin()
    sessions = sessionmaker(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    settings = Settings(home=blob_root.parent, database_url=url, blob_url=blob_root.as_uri())
    ctx = ServiceContext(
        settings=settings, engine=engine, sessions=sessions, blobs=LocalBlobStore(blob_root), principal=SYSTEM
    )
    try:
        yield Earmark(ctx)
    finally:
        outer.rollback()
        conn.close()
        engine.dispose()


@pytest.fixture
def em(server_url: str, tmp_path: Path) -> Iterator[Earmark]:
    """Services on the machine's PostgreSQL, rolled back after the test."""
    yield from _rolled_back_em(server_url, tmp_path / "blobs")


@pytest.fixture
def any_em(any_pg_url: str, tmp_path: Path) -> Iterator[Earmark]:
    """Services on each PostgreSQL backend in turn, rolled back after the test."""
    yield from _rolled_back_em(any_pg_url, tmp_path / "blobs")


def truncate_all(url: str) -> None:
    engine = create_engine(url)
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def committed_em(server_url: str, tmp_path: Path) -> Iterator[Earmark]:
    """Services that really commit (for threads, Ray and restarts); tables truncated afterwards."""
    import earmark

    settings = Settings(home=tmp_path, database_url=server_url, blob_url=(tmp_path / "blobs").as_uri())
    client = earmark.connect(settings, pool_size=10)
    try:
        yield client
    finally:
        client.close()
        truncate_all(server_url)


# ---- S3 (SeaweedFS) --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from earmark.seaweed import SeaweedServer, free_port

    # Credentials set before weed starts make it enforce signatures (otherwise any key passes).
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "earmark-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "earmark-test-secret")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture
def s3_store(seaweed: object) -> S3BlobStore:
    bucket = f"test-{uuid.uuid4().hex[:8]}"
    return S3BlobStore(bucket, "blobs", endpoint_url=seaweed.endpoint)  # type: ignore[attr-defined]


# ---- pipelines: the offline policy checkpoint and a local Ray ---------------------------------------
@pytest.fixture(scope="session")
def checkpoint():
    from pipelines.policy.offline.build import ensure_checkpoint

    return ensure_checkpoint(progress=False).resolve()


@pytest.fixture(scope="session")
def ray_local(tmp_path_factory):
    from pipelines.ray_runtime import ensure_ray, shutdown

    os.environ["EARMARK_RAY_TMPDIR"] = str(tmp_path_factory.mktemp("ray"))
    ensure_ray(Settings(), num_cpus=2)
    yield
    shutdown()
