"""`earmark drift report`: HTML + PNG + JSON written, summary printed, exit 1 on an alert, 0 without."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import typer
from drift_fixtures import build_world
from typer.testing import CliRunner

from earmark.cli.drift_cmds import drift_app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Registered the way earmark.cli.main adds it: `earmark drift report ...`.
app = typer.Typer()
app.add_typer(drift_app, name="drift")


@pytest.fixture
def cli_env(committed_em, monkeypatch: pytest.MonkeyPatch):
    cfg = committed_em.settings
    monkeypatch.setenv("EARMARK_DATABASE_URL", cfg.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_BLOB_URL", cfg.blob_url)
    monkeypatch.setenv("EARMARK_HOME", str(cfg.home))
    return committed_em


def run(out: Path, *extra: str):
    return CliRunner().invoke(
        app, ["drift", "report", "--baseline", "0", "--candidate", "2", "--out", str(out), "--bootstrap", "30", *extra]
    )


def test_alert_exits_1_and_writes_the_report(cli_env, tmp_path: Path) -> None:
    build_world(cli_env, shift=1.5)
    res = run(tmp_path / "rep")
    assert res.exit_code == 1, res.output
    assert "bt@1/preference" in res.output and "significant" in res.output
    assert "alert(s) fired" in res.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "http://" not in page.split("<body>")[1][:2000]
    assert "Reward drift: speech v2 vs baseline v0" in page
    if importlib.util.find_spec("vl_convert"):  # interactive Vega charts, libraries inlined
        assert "vegaEmbed(" in page and "cdn.jsdelivr" not in page
    else:  # without vl-convert-python: the matplotlib PNGs, base64-embedded
        assert page.count("data:image/png;base64,") >= 4
    for name in ("distributions", "drift_metrics", "windows", "trap", "leaderboard"):
        assert (tmp_path / "rep" / f"{name}.png").read_bytes().startswith(PNG_MAGIC), name
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert {a["kind"] for a in summary["alerts"] if a["severity"] == "alert"} >= {"psi", "mean_shift"}
    listed = CliRunner().invoke(app, ["drift", "alerts", "--policy", "speech"])
    assert listed.exit_code == 0 and listed.output.count("v0->v2") == len(summary["alerts"])


def test_no_alert_exits_0(cli_env, tmp_path: Path) -> None:
    build_world(cli_env, shift=0.0)
    res = run(tmp_path / "rep", "--no-store")
    assert res.exit_code == 0, res.output
    assert "no alert fired" in res.output
    assert (tmp_path / "rep" / "report.html").exists()


def test_png_fallback_without_vega_libs(cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without vl-convert-python the HTML embeds the matplotlib PNGs instead of Vega charts."""
    import earmark.drift.html as report_html

    monkeypatch.setattr(report_html, "vega_bundle", lambda: None)
    build_world(cli_env, shift=0.0)
    res = run(tmp_path / "rep", "--no-store")
    assert res.exit_code == 0, res.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "vegaEmbed(" not in page and page.count("data:image/png;base64,") >= 4


def test_unknown_version_is_a_clear_error(cli_env, tmp_path: Path) -> None:
    build_world(cli_env, shift=0.0)
    res = CliRunner().invoke(app, ["drift", "report", "--baseline", "0", "--candidate", "9", "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "no policy is registered at both v0 and v9" in res.output
