"""CI=1 turns a skip for want of chromium or PostgreSQL into a failure; other skips stay skips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent

SAMPLE = """
import pytest

@pytest.mark.skipif(True, reason="Debian chromium is not installed at /usr/bin/chromium")
def test_browser():
    pass

def test_pg():
    pytest.skip("no PostgreSQL at 127.0.0.1:5432")

@pytest.mark.skipif(True, reason="pip install choix")
def test_optional():
    pass
"""


def _run(tmp_path: Path, ci: str | None) -> dict[str, str]:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "ci_guard", "-p", "no:cacheprovider", str(tmp_path),
         f"--junitxml={tmp_path / 'j.xml'}", "-rA"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    import xml.etree.ElementTree as ET

    out = {}
    for case in ET.parse(tmp_path / "j.xml").iter("testcase"):
        kinds = [c.tag for c in case]
        out[case.get("name")] = (
            "failed" if "failure" in kinds or "error" in kinds else "skipped" if "skipped" in kinds else "passed"
        )
    report.write_text(json.dumps(out))
    return out


@pytest.mark.parametrize("ci", ["1", "true"])
def test_ci_fails_skips_of_required_services(tmp_path: Path, ci: str) -> None:
    assert _run(tmp_path, ci) == {"test_browser": "failed", "test_pg": "failed", "test_optional": "skipped"}


def test_without_ci_they_are_skips(tmp_path: Path) -> None:
    assert set(_run(tmp_path, None).values()) == {"skipped"}
