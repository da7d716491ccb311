"""`earmark import`, `earmark schema`, `earmark dataset export-pairs` and `fetch-audio` from the command line."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from interchange_util import copy_data
from typer.testing import CliRunner

from earmark.cli.main import app

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def cli_env(committed_em, server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    monkeypatch.setenv("EARMARK_BLOB_URL", (tmp_path / "blobs").as_uri())
    return committed_em


def test_schema_command() -> None:
    res = runner.invoke(app, ["schema"])
    assert res.exit_code == 0
    doc = json.loads(res.output)
    assert set(doc["earmark"]) == {"prompt", "persona", "response", "judgment"} and "arena" in doc["foreign_formats"]
    res = runner.invoke(app, ["schema", "judgment"])
    assert res.exit_code == 0 and json.loads(res.output)["title"] == "earmark judgment line"
    bad = runner.invoke(app, ["schema", "nope"])
    assert bad.exit_code == 2 and "neither" in bad.output


def test_import_conflict_export_pairs_fetch_audio(cli_env, tmp_path) -> None:
    src = copy_data(tmp_path / "in", "earmark.jsonl", "clip.wav", "a.wav", "b.wav", "label_studio_export.json")
    res = runner.invoke(app, ["import", str(src / "earmark.jsonl")])
    assert res.exit_code == 0 and "1 judgments" in res.output, res.output
    res = runner.invoke(app, ["import", str(src / "label_studio_export.json"), "--format", "label-studio"])
    assert res.exit_code == 0, res.output
    rows = (src / "earmark.jsonl").read_text().replace('"preference": 1', '"preference": -1')
    (src / "earmark.jsonl").write_text(rows)
    res = runner.invoke(app, ["import", str(src / "earmark.jsonl")])
    assert res.exit_code == 2 and "--on-conflict update" in res.output
    res = runner.invoke(app, ["import", str(src / "earmark.jsonl"), "--on-conflict", "update"])
    assert res.exit_code == 0 and "updated" in res.output
    out = tmp_path / "pairs.parquet"
    res = runner.invoke(app, ["dataset", "export-pairs", "-o", str(out)])
    assert res.exit_code == 0, res.output
    t = pq.read_table(out).to_pylist()
    assert len(t) == 4
    mine = next(r for r in t if r["source"] == "earmark:earmark.jsonl")
    assert (mine["chosen"], mine["rejected"], mine["chosen_policy"]) == ("It will rain.", "Sunny and mild.", "vendor-y")
    tie = next(r for r in t if r["tie"] and not r["both_bad"])
    assert tie["preference"] == 0.0 and tie["annotator"] == "7"
    res = runner.invoke(app, ["dataset", "fetch-audio", str(out)])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "pairs_audio").iterdir())) == 3
    res = runner.invoke(app, ["import", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "cannot be read" in res.output
