"""The `earmark` CLI: --help everywhere, store commands, clear errors with exit code 2."""

from __future__ import annotations

import json

import pytest
import typer.main
from conftest import truncate_all
from typer.testing import CliRunner

from earmark.cli.main import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _all_command_paths(group, prefix: tuple[str, ...] = ()):
    yield prefix
    if hasattr(group, "commands"):
        for name, cmd in group.commands.items():
            yield from _all_command_paths(cmd, (*prefix, name))


def test_every_command_has_help() -> None:
    paths = list(_all_command_paths(typer.main.get_command(app)))
    assert ("db", "upgrade") in paths and ("services", "up") in paths and ("prompts", "import") in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


@pytest.fixture
def cli_env(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    yield tmp_path
    truncate_all(server_url)


def test_db_current_and_import(cli_env) -> None:
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 0 and "up to date" in result.output
    personas = cli_env / "personas.jsonl"
    personas.write_text(json.dumps({"name": "captain", "style": "terse"}) + "\n")
    result = runner.invoke(app, ["personas", "import", str(personas)])
    assert result.exit_code == 0 and "1 added" in result.output
    result = runner.invoke(app, ["personas", "import", str(personas)])
    assert "0 added, 1 already present" in result.output


def test_bad_file_gives_clear_error(cli_env) -> None:
    bad = cli_env / "prompts.jsonl"
    bad.write_text('{"external_id": "x", "regime": "karaoke", "messages": []}\n')
    result = runner.invoke(app, ["prompts", "import", str(bad)])
    assert result.exit_code == 2
    assert "invalid_input" in result.output and "nothing was imported" in result.output
    missing = runner.invoke(app, ["prompts", "import", str(cli_env / "nope.jsonl")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_bad_setting_is_named(monkeypatch) -> None:
    monkeypatch.setenv("EARMARK_DATABASE_URL", "sqlite:///x.db")
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 2 and "EARMARK_DATABASE_URL" in result.output and "SQLite" in result.output


def test_services_status_embedded(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("EARMARK_DATABASE_URL", raising=False)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    result = runner.invoke(app, ["services", "status"])
    assert result.exit_code == 0 and "PostgreSQL (embedded): stopped" in result.output
