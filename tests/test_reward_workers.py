"""`earmark rm serve --workers N`: each worker listens on its own SO_REUSEPORT socket, so the
kernel spreads connections over the workers; a port already in use is refused before any worker
starts, also when another earmark service holds it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from earmark.seaweed import free_port
from pipelines.reward_service.server import reuse_port_supported

TOKEN = "workers-token-0123456789-abcdefghijklmn"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT balancing is Linux's")


def _env(em, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "EARMARK_DATABASE_URL": em.settings.database_url.get_secret_value(),
        "EARMARK_HOME": str(home),
        "EARMARK_BLOB_URL": (home / "blobs").as_uri(),
        "EARMARK_REWARD_TOKEN": TOKEN,
    }


def _serve(env: dict[str, str], port: int, log: Path, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "earmark.cli.main", "rm", "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=open(log, "wb"),  # noqa: SIM115 - the child owns it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _listening_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets in LISTEN state on ``port`` (from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == port and f[3] == "0A":
            out.add(f[9])
    return out


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


@pytest.mark.slow
def test_workers_listen_on_their_own_sockets_and_share_connections(committed_em, tmp_path) -> None:
    port = free_port()
    env = _env(committed_em, tmp_path)
    log = tmp_path / "service.log"
    proc = _serve(env, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while len(_listening_sockets(port)) < 2 or not _ready(url):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "service did not start 2 listening workers"
            time.sleep(0.2)
        assert len(_listening_sockets(port)) == 2  # one per worker, not one shared socket

        # 24 clients, each on its own keep-alive connection: the kernel hashes them over both
        # workers (all on one: probability 2 * 2**-24)
        for _ in range(24):
            with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
                for _ in range(3):
                    r = http.post(url + "/get_reward", json={"query": ["#### 4"], "labels": ["4"]})
                    assert r.status_code == 200, r.text
                    assert r.json()["rewards"] == [1.0]

        # a second service on the same port is refused before it starts workers
        second = subprocess.run(
            [sys.executable, "-m", "earmark.cli.main", "rm", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port}" in second.stdout + second.stderr
        assert "pick another --port" in second.stdout + second.stderr
        assert len(_listening_sockets(port)) == 2  # and it did not join the running service
    finally:
        _stop(proc)
    # the access log (written out 4x a second, and at shutdown) names the worker's process id
    pids = {m.group(1) for m in re.finditer(r" (\d+) earmark\.reward\.access INFO ", log.read_text())}
    assert len(pids) == 2, log.read_text()[-3000:]


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_port_in_use_is_a_clear_error(committed_em, tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "earmark.cli.main", "rm", "serve", "--port", str(port), "--workers", "2"],
            env=_env(committed_em, tmp_path),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode != 0
    assert "pick another --port" in r.stdout + r.stderr
