"""Fault injection against the real parts: PostgreSQL and S3 restarted mid-job, orphan blobs swept."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from annotation_fixtures import make_user, record_judgment_counts, seed_rollouts
from audio_util import tone
from sqlalchemy import text

from earmark.blobs import S3BlobStore
from earmark.config import Settings
from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.simulate import run_raters
from earmark.store import embedded, migrate
from earmark.store.engine import make_engine

pytestmark = pytest.mark.slow


@pytest.fixture
def restartable_pg(tmp_path):
    """An embedded PostgreSQL we may stop and start (the machine's server is shared with other tests)."""
    home = tmp_path / "pg-home"
    url = embedded.start(home)
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    yield home, url
    embedded.stop(home)


def _restart_later(home, after, down_s=1.5):
    def run():
        after.wait(60)
        embedded.stop(home)
        time.sleep(down_s)
        embedded.start(home)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_rollout_job_survives_postgres_restart(restartable_pg, checkpoint, ray_local, tmp_path) -> None:
    from pipeline_fixtures import seed_offline

    import earmark
    from pipelines.rollout_job import RolloutJobConfig, run_rollout_job

    home, url = restartable_pg
    em = earmark.connect(Settings(home=tmp_path, database_url=url, blob_url=(tmp_path / "blobs").as_uri()))
    seed_offline(em, checkpoint, n_prompts=6, multi=False)
    first_rows = threading.Event()

    def watch():
        while not first_rows.is_set():
            try:
                if em.rollouts.count() > 0:
                    first_rows.set()
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()
    restarter = _restart_later(home, first_rows)
    res = run_rollout_job(
        em,
        RolloutJobConfig(policy="offline-speech", samples=3, actors=2, batch_size=1, max_new_tokens=48),
        progress=False,
    )
    restarter.join(30)
    assert first_rows.is_set() and not restarter.is_alive()
    with em.session() as s:
        total = s.scalar(text("SELECT count(*) FROM rollouts"))
        distinct = s.scalar(text("SELECT count(DISTINCT (prompt_id, sample_index)) FROM rollouts"))
        dangling = s.scalar(
            text(
                "SELECT count(*) FROM rollouts r LEFT JOIN blobs b ON b.sha256 = r.audio_sha256 WHERE b.sha256 IS NULL"
            )
        )
    assert (total, distinct, dangling) == (18, 18, 0)
    assert res.planned == 18
    em.close()


def test_32_raters_with_a_database_restart(restartable_pg, tmp_path, record_property) -> None:
    import earmark

    home, url = restartable_pg
    settings = Settings(home=tmp_path, database_url=url, blob_url=(tmp_path / "blobs").as_uri(), lease_seconds=10)
    em = earmark.connect(settings, pool_size=40)
    seed_rollouts(em, n_prompts=10, k=3)
    camp = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
        CampaignCreate(name="restart", overlap=3, gold_ratio=0.0, max_items=30)
    )
    raters = [em.as_principal(make_user(em, f"r{i:02d}")) for i in range(32)]
    some_done = threading.Event()

    def watch():
        while not some_done.is_set():
            try:
                if em.campaigns.progress(camp.id).done >= 20:
                    some_done.set()
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.02)

    threading.Thread(target=watch, daemon=True).start()
    restarter = _restart_later(home, some_done, down_s=1.0)
    stats = run_raters(
        raters, camp.id, p_skip=0.1, p_walk_away=0.03, p_double_submit=0.1, idle_wait_s=0.5, deadline_s=120
    )
    restarter.join(30)
    assert some_done.is_set()
    with em.session() as s:
        per_item = [
            n
            for (n,) in s.execute(
                text(
                    "SELECT count(j.id) FROM comparisons c LEFT JOIN judgments j ON j.comparison_id = c.id "
                    "WHERE c.campaign_id = :c GROUP BY c.id"
                ),
                {"c": camp.id},
            )
        ]
        dups = s.scalar(
            text(
                "SELECT count(*) FROM (SELECT comparison_id, rater_id FROM judgments GROUP BY 1, 2 "
                "HAVING count(*) > 1) d"
            )
        )
    record_judgment_counts(record_property, per_item, 30, 3, dups)
    assert len(per_item) == 30 and set(per_item) == {3}, per_item  # exactly k each: 0 lost
    assert dups == 0
    assert sum(st.submitted for st in stats) == 90
    em.close()


def test_s3_restart_during_blob_writes_and_orphan_sweep(seaweed, server_url, tmp_path) -> None:
    import os

    import earmark
    from earmark.seaweed import SeaweedServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "earmark-test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "earmark-test-secret")
    # our own S3 server so stopping it does not disturb other tests
    server = SeaweedServer(tmp_path / "weed", __import__("earmark.seaweed").seaweed.free_port()).start()
    try:
        bucket = f"faults-{uuid.uuid4().hex[:6]}"
        em = earmark.connect(
            Settings(
                home=tmp_path, database_url=server_url, blob_url=f"s3://{bucket}/b", s3_endpoint_url=server.endpoint
            )
        )
        assert isinstance(em.ctx.blobs, S3BlobStore)
        written, errors = [], []

        def writer():
            for i in range(30):
                try:
                    written.append(em.blobs.put_waveform(tone(0.2, 16000, 100 + 7 * i), 16000).sha256)
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                time.sleep(0.05)

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.4)
        server.stop()  # S3 goes away mid-stream ...
        time.sleep(1.0)
        server.start()  # ... and comes back on the same port; boto3 retries with backoff
        t.join(120)
        assert errors == [] and len(written) == 30
        with em.session() as s:
            rows = set(s.scalars(text("SELECT sha256 FROM blobs")).all())
        assert set(written) <= rows
        assert all(em.ctx.blobs.exists(d) for d in rows & set(written))  # no row points at a missing blob
        # an orphan: bytes written, row never committed (a crash between the two)
        orphan = em.ctx.blobs.put_bytes(b"orphaned bytes " + uuid.uuid4().bytes)
        assert em.blobs.sweep_orphans(grace_s=3600) == []  # too young: its row may still be coming
        removed = em.blobs.sweep_orphans(grace_s=0)
        assert removed == [orphan.sha256] and not em.ctx.blobs.exists(orphan.sha256)
        assert all(em.ctx.blobs.exists(d) for d in written)
        em.close()
    finally:
        server.stop()
        from conftest import truncate_all

        truncate_all(server_url)


def test_annotation_app_survives_a_database_restart_mid_item(restartable_pg, tmp_path, monkeypatch) -> None:
    """A rater has an item on screen when PostgreSQL restarts: the app's next call reconnects, the
    judgment is stored once, and the next item loads; no error reaches the page."""
    from test_ui_app import answer, app, login, report_played, shown

    import earmark
    from annotation_ui.session import _client

    home, url = restartable_pg
    settings = Settings(home=tmp_path, database_url=url, blob_url=(tmp_path / "blobs").as_uri())
    em = earmark.connect(settings, pool_size=4)
    seed_rollouts(em, n_prompts=3)
    em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
        CampaignCreate(name="restart-ui", overlap=1, gold_ratio=0.0)
    )
    make_user(em, "rita")
    for var, value in (
        ("EARMARK_DATABASE_URL", url),
        ("EARMARK_BLOB_URL", settings.blob_url),
        ("EARMARK_HOME", str(tmp_path)),
    ):
        monkeypatch.setenv(var, value)
    try:
        at = login(app(), "rita")
        tid = shown(at).task_id
        embedded.stop(home)  # the server goes away while the rater listens ...
        embedded.start(home)  # ... and comes back: every pooled connection of the app is now dead
        at = answer(report_played(at), "A")
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert [s.value for s in at.success] == [f"Saved your answer to item #{tid}."]
        assert shown(at).task_id != tid
        with em.session() as s:
            assert s.scalar(text("SELECT count(*) FROM judgments WHERE task_id = :t"), {"t": tid}) == 1
            assert s.scalar(text("SELECT count(*) FROM judgments")) == 1
    finally:
        _client.clear()
        em.close()
