"""One launcher for ``streamlit run annotation_ui/app.py`` (or a test's page wrapper) on 127.0.0.1, shared
by the browser tests (``tests/test_ui_browser.py``, ``tests/test_ui_flows_browser.py``,
``tests/test_drift_page.py``) and ``bench/annotation.py``.

The server runs on a free port against the store the caller names; ``start`` waits for the health
endpoint (or says why the process died, with the log's tail), ``stop`` kills it as a crash would
(``graceful=True`` terminates instead), and ``start`` again brings it back on the same port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServedApp:
    """``streamlit run annotation_ui/app.py`` on a fixed port that can be stopped and started again."""

    def __init__(
        self,
        database_url: str,
        home: Path | str,
        log: Path,
        *,
        blob_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout_s: float = 60.0,
        script: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.start_timeout_s = start_timeout_s
        self.script = script or REPO / "annotation_ui" / "app.py"  # or a test's own page wrapper
        self.env = {**os.environ, "EARMARK_DATABASE_URL": database_url, "EARMARK_HOME": str(home)}
        if blob_url:
            self.env["EARMARK_BLOB_URL"] = blob_url
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None

    @classmethod
    def for_em(cls, em, log: Path, **kw) -> ServedApp:
        """Served on the same store (database, blobs, home) as an ``Earmark`` connection."""
        cfg = em.settings
        return cls(cfg.database_url.get_secret_value(), cfg.home, log, blob_url=cfg.blob_url, **kw)

    def start(self) -> None:
        out = self.log.open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(self.script),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
                "--server.port",
                str(self.port),
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
            ],
            cwd=REPO,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()  # the child holds its own copy
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = self.log.read_text()[-2000:]
                    self.stop()
                    raise RuntimeError(f"streamlit did not start: {tail}") from None
                time.sleep(0.1)

    def stop(self, graceful: bool = False) -> None:
        if self.proc is None:
            return
        if graceful:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        else:
            self.proc.kill()  # as a crash would: no goodbye to the browser
            self.proc.wait(20)
        self.proc = None

    def __enter__(self) -> ServedApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(graceful=True)
