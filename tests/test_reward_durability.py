"""Durability rule of the reward service: a score is answered only after its serving event is
committed, so kill -9 of the whole service under load loses no acknowledged score, with either
durability setting; 'server' commits with synchronous_commit off in the writer's session only."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from earmark.seaweed import free_port

TOKEN = "durability-token-0123456789-abcdefghij"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("durability", ["server", "disk"])
def test_kill_9_under_load_loses_no_acknowledged_score(committed_em, tmp_path, durability) -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "EARMARK_DATABASE_URL": committed_em.settings.database_url.get_secret_value(),
        "EARMARK_HOME": str(tmp_path),
        "EARMARK_BLOB_URL": (tmp_path / "blobs").as_uri(),
        "EARMARK_REWARD_TOKEN": TOKEN,
    }
    log = open(tmp_path / "service.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "earmark.cli.main", "rm", "serve"),
            *("--port", str(port), "--workers", "2", "--durability", durability),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)

        acked: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def client(c: int) -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as http:
                k = 0
                while not stop.is_set():
                    uids = [f"{c}-{k}-{j}" for j in range(4)]
                    k += 1
                    try:
                        r = http.post(
                            url + "/get_reward",
                            json={"query": ["#### 4"] * 4, "labels": ["4"] * 4, "sample_uids": uids},
                        )
                    except httpx.HTTPError:
                        continue
                    if r.status_code == 200:
                        with lock:
                            acked.extend(uids)

        threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in range(16)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 2000:  # well under load before the kill
            assert time.monotonic() < deadline, f"only {len(acked)} scores acknowledged"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the uvicorn parent and its workers, no shutdown
        proc.wait(timeout=30)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        with lock:
            acked_now = list(acked)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
    with committed_em.session() as s:
        stored = s.execute(text("SELECT sample_uid, count(*) FROM serving_events GROUP BY sample_uid")).all()
    counts = dict(stored)
    missing = [u for u in acked_now if counts.get(u, 0) != 1]
    assert len(acked_now) >= 2000 and not missing, f"{len(missing)} acknowledged scores lost or duplicated"


@pytest.mark.parametrize(("durability", "expected"), [("server", "off"), ("disk", None)])
def test_writer_session_commits_as_configured(committed_em, durability, expected) -> None:
    """'server': the writer's own session has synchronous_commit off, also after a reconnect;
    'disk': the server's setting stands. Other sessions are untouched."""
    import asyncio

    import psycopg

    from pipelines.reward_service.recorder import Recorder, copy_line, time_ordered_uuid
    from pipelines.reward_service.server import conninfo_of

    conninfo = conninfo_of(committed_em)
    with psycopg.connect(conninfo) as c:
        server_default = c.execute("SHOW synchronous_commit").fetchone()[0]

    async def go() -> list[str]:
        rec = Recorder(conninfo, durability=durability)
        await rec.start()
        try:
            seen = [(await (await rec._conn.execute("SHOW synchronous_commit")).fetchone())[0]]
            await rec._conn.close()  # the next group reconnects
            row = (
                time_ordered_uuid(),
                0,
                "test",
                None,
                None,
                "uid-1",
                "reasoning",
                "p",
                "r",
                None,
                "{}",
                "v",
                1.0,
                "{}",
                None,
            )
            await rec.record(copy_line(row), 1, 30)
            seen.append((await (await rec._conn.execute("SHOW synchronous_commit")).fetchone())[0])
            return seen
        finally:
            await rec.stop()

    assert asyncio.run(go()) == [expected or server_default] * 2
    with psycopg.connect(conninfo) as c:
        assert c.execute("SHOW synchronous_commit").fetchone()[0] == server_default


def test_durability_is_checked() -> None:
    from pipelines.reward_service.app import ServiceConfig
    from pipelines.reward_service.recorder import Recorder

    assert ServiceConfig(conninfo="").durability == "server"
    with pytest.raises(ValueError, match="durability"):
        ServiceConfig(conninfo="", durability="memory")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="use 'server' or 'disk'"):
        Recorder("", durability="memory")  # type: ignore[arg-type]
