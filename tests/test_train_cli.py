"""`earmark train dpo|runs|show` on a committed store, bad input, and the demo's DPO hook."""

from __future__ import annotations

import json

import pytest
from test_train_dpo import build_snapshot, generated  # noqa: F401 - the fixture
from typer.testing import CliRunner

from earmark.cli.train_cmds import train_app
from earmark.services.training import TrainingService


@pytest.fixture
def cli_env(committed_em, monkeypatch, tmp_path):
    s = committed_em.settings
    monkeypatch.setenv("EARMARK_HOME", str(s.home))
    monkeypatch.setenv("COLUMNS", "200")  # rich tables wide enough to read back
    monkeypatch.setenv("EARMARK_DATABASE_URL", s.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_BLOB_URL", s.blob_url)
    return committed_em


def test_train_dpo_cli_runs_registers_and_lists(cli_env, checkpoint, generated) -> None:  # noqa: F811
    em = cli_env
    _base, ds = build_snapshot(em, checkpoint, generated)
    runner = CliRunner()
    res = runner.invoke(
        train_app,
        [
            "dpo",
            ds.name,
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "5e-4",
            "--eval-fraction",
            "0.3",
            "--workers",
            "0",
            "--threads",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "registered offline-speech v1" in res.output and "held-out accuracy 0.500 ->" in res.output
    run = TrainingService(em.ctx).runs(limit=1)[0]
    assert run.status == "succeeded" and run.config["batch_size"] == 8 and run.config["epochs"] == 1
    out = runner.invoke(train_app, ["runs"])
    assert out.exit_code == 0 and "succeeded" in out.output
    shown = runner.invoke(train_app, ["show", str(run.id)])
    assert shown.exit_code == 0 and json.loads(shown.output)["output_policy_id"] == run.output_policy_id
    # bad input: one red line naming the problem, exit code 2, no run row
    bad = runner.invoke(train_app, ["dpo", ds.name, "--loss", "nope"])
    assert bad.exit_code == 2 and "loss_type" in bad.output
    odd = runner.invoke(train_app, ["dpo", ds.name, "--batch-size", "6", "--grad-accum", "4"])
    assert odd.exit_code == 2 and "multiple of" in odd.output
    missing = runner.invoke(train_app, ["dpo", "no-such-snapshot"])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    assert len(TrainingService(em.ctx).runs()) == 1

    # the demo's DPO step (the one demo config, pipelines.loop.DEMO_DPO): in-process, returns the
    # next version and the round's metrics
    from pipelines.loop import train_dpo_round

    v2, metrics = train_dpo_round(em, em.catalog.policy("offline-speech", 1), ds, em.settings, threads=1)
    assert v2.version == 2 and v2.parent_id == em.catalog.policy("offline-speech", 1).id
    assert {"loss", "accuracy", "reward_margin", "kl"} <= set(metrics)
