"""A newcomer's first commands, from the CLI alone on a fresh EARMARK_HOME:
init -> policies register -> rollout -> score -> campaign open/list -> ui answers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, fresh_database

pytestmark = pytest.mark.slow


def _free_port() -> int:
    from earmark.seaweed import free_port

    return free_port()


@pytest.fixture
def newcomer(tmp_path: Path):
    url, drop = fresh_database("earmark_newcomer")  # an empty database: nothing migrated yet
    env = dict(os.environ)
    env.update(
        EARMARK_HOME=str(tmp_path / "home"),
        EARMARK_DATABASE_URL=url,
        EARMARK_RAY_TMPDIR=tempfile.mkdtemp(prefix="emray-"),  # short: Ray's socket paths are limited
        COLUMNS="200",
        NO_COLOR="1",
        PYTHONPATH=os.pathsep.join([str(REPO / "platform"), str(REPO), env.get("PYTHONPATH", "")]),
    )
    yield env
    drop()


def earmark(env: dict[str, str], *args: str, timeout: float = 900) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "earmark.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=env["EARMARK_HOME"].rsplit("/", 1)[0],
    )
    assert res.returncode == 0, f"earmark {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_init_rollout_score_campaign_ui(newcomer: dict[str, str]) -> None:
    out = earmark(newcomer, "init")
    assert "6 personas and" in out and "prompts added" in out
    assert "0 prompts added" in earmark(newcomer, "init")  # idempotent

    out = earmark(newcomer, "policies", "register", "offline-speech")
    assert "offline-speech v0 registered" in out
    assert "offline-speech" in earmark(newcomer, "policies", "list")

    out = earmark(
        newcomer, "rollout", "--policy", "offline-speech", "--prompts", "heldout-new-0,heldout-new-1", "-k", "2"
    )
    assert "rollouts: 4 generated" in out

    out = earmark(newcomer, "score", "--policy", "offline-speech")
    assert "scored 4 rollouts" in out and "prosody" in out

    out = earmark(newcomer, "campaign", "open", "first look", "--policy", "offline-speech:0", "--overlap", "1")
    assert "'first look' open: 2 items" in out
    listing = earmark(newcomer, "campaign", "list")
    assert "first look" in listing and "pairwise" in listing and "0/2" in listing

    port = _free_port()
    ui = subprocess.Popen(
        [sys.executable, "-m", "earmark.cli.main", "ui", "--port", str(port)],
        env=newcomer,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline, body = time.monotonic() + 180, b""
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=5) as r:
                    body = r.read()
                    break
            except OSError:
                time.sleep(0.5)
        assert body == b"ok", f"the app did not answer: {ui.poll()=}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        os.killpg(ui.pid, 15)
        ui.wait(timeout=30)
