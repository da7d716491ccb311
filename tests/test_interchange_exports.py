"""Exports that carry their audio; the TRL export through datasets.load_dataset and one DPOTrainer step;
OpenRLHF columns; the earmark JSONL export imported again (round trip of judgments)."""

from __future__ import annotations

import json

import pytest
from conftest import fresh_database
from regime_fixtures import seed_regimes
from sqlalchemy import text
from typer.testing import CliRunner

from earmark import exports
from earmark.cli.main import app
from earmark.services.datasets import SnapshotFilters
from earmark.services.labels import LabelConfig

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def snap(committed_em, server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    monkeypatch.setenv("EARMARK_BLOB_URL", (tmp_path / "blobs").as_uri())
    world = seed_regimes(committed_em)
    filters = SnapshotFilters(labels=LabelConfig(ai_fill=True, ai_reward_model_ids=[world["ai_rm"].id]))
    ds = committed_em.datasets.build("ix", filters)
    return committed_em, ds


def test_trl_embed_round_trips_through_load_dataset_and_trains_a_dpo_step(snap, tmp_path, checkpoint) -> None:
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("trl")
    em, ds = snap
    out = tmp_path / "trl.parquet"
    res = runner.invoke(app, ["dataset", "export", "ix", "-f", "trl", "-o", str(out), "--audio", "embed"])
    assert res.exit_code == 0, res.output
    loaded = datasets.load_dataset("parquet", data_files=str(out), split="train")
    for col in ("prompt_audio", "chosen_audio", "rejected_audio"):
        assert type(loaded.features[col]).__name__ == "Audio", (col, loaded.features[col])
    raw = loaded  # decoding needs torchcodec (datasets >= 4); the bytes are what we check here
    for col in ("prompt_audio", "chosen_audio", "rejected_audio"):
        raw = raw.cast_column(col, datasets.Audio(decode=False))
    rows = em.datasets.load(ds).to_pylist()
    tts = next(i for i, r in enumerate(rows) if r["regime"] == "tts")
    assert raw[tts]["chosen_audio"]["bytes"] == em.blobs.read(rows[tts]["chosen_audio_sha256"])
    assert set(loaded.column_names) >= {"prompt", "chosen", "rejected", "confidence", "weight"}

    from trl import DPOConfig, DPOTrainer

    from pipelines.policy.offline.policy import OfflineSpeechPolicy

    policy = OfflineSpeechPolicy.from_pretrained(checkpoint)
    train = loaded.remove_columns(["prompt_audio", "chosen_audio", "rejected_audio"]).select_columns(
        ["prompt", "chosen", "rejected"]
    )
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=0,
        max_length=256,
    )
    trainer = DPOTrainer(model=policy.model, args=args, train_dataset=train, processing_class=policy.tokenizer)
    result = trainer.train()
    assert result.global_step == 1 and result.training_loss > 0


def test_files_sha_and_openrlhf_columns(snap, tmp_path) -> None:
    em, ds = snap
    out = tmp_path / "orl.jsonl"
    res = runner.invoke(app, ["dataset", "export", "ix", "-f", "openrlhf", "-o", str(out), "--audio", "files"])
    assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    withaudio = [r for r in recs if r["chosen_audio"]]
    assert withaudio and all((tmp_path / r["chosen_audio"]).is_file() for r in withaudio)
    for r in recs:  # reply only: OpenRLHF prepends the prompt itself with --data.prompt_key
        assert len(r["chosen"]) == 1 and r["chosen"][0]["role"] == "assistant"
        assert r["margin"] == pytest.approx(exports.reward_gap(r["confidence"]))
        assert 0.5 <= r["confidence"] <= 1 and r["weight"] > 0
    out = tmp_path / "trl_sha.jsonl"
    res = runner.invoke(app, ["dataset", "export", "ix", "-f", "trl", "-o", str(out), "--audio", "sha"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["dataset", "fetch-audio", str(out)])
    assert res.exit_code == 0, res.output
    fetched = sorted(p.name for p in (tmp_path / "trl_sha_audio").iterdir())
    assert fetched and all(em.blobs.read(n[:-4]) == (tmp_path / "trl_sha_audio" / n).read_bytes() for n in fetched)
    bad = runner.invoke(app, ["dataset", "export", "ix", "-f", "trl", "-o", str(out), "--audio", "embed"])
    assert bad.exit_code == 2 and ".parquet" in bad.output


def test_earmark_export_imports_into_a_fresh_store(snap, tmp_path) -> None:
    import earmark
    from earmark.config import Settings

    em, ds = snap
    out = tmp_path / "export" / "ix.jsonl"
    out.parent.mkdir()
    res = runner.invoke(app, ["dataset", "export", "ix", "-f", "earmark", "-o", str(out), "--audio", "files"])
    assert res.exit_code == 0, res.output
    # into the same store: everything is already there except the judgments, which now exist externally
    again = em.interchange.import_file(out)
    assert again.added["prompt"] == 0 and again.added["response"] == 0 and again.added["judgment"] == ds.row_count
    # into a fresh store: prompts, responses, audio and judgments all come back
    url, drop = fresh_database("earmark_ix")
    try:
        other = earmark.connect(
            Settings(home=tmp_path / "h2", database_url=url, blob_url=(tmp_path / "blobs2").as_uri()), upgrade=True
        )  # an external database is not migrated on connect unless asked
        s = other.interchange.import_file(out)
        assert s.added["judgment"] == ds.row_count and s.blobs_added > 0
        with other.session() as db:
            got = db.execute(text("SELECT count(*), min(preference), max(preference) FROM external_judgments")).one()
            assert tuple(got) == (ds.row_count, 1.0, 1.0)
            assert db.execute(text("SELECT count(*) FROM judgments")).scalar_one() == 0
        other.close()
    finally:
        drop()


def test_export_pairs_by_source_and_copy_reader_cleanup(committed_em, tmp_path) -> None:
    """export_pairs_parquet filters by source; the libpq COPY reader raises the server's error and,
    closed early, cancels the COPY so the connection is usable again."""
    import psycopg
    import pyarrow.parquet as pq
    from interchange_util import copy_data

    from earmark.services.interchange import _CopyOut, export_pairs_parquet

    em = committed_em
    src = copy_data(tmp_path / "in", "earmark.jsonl", "clip.wav", "a.wav", "b.wav", "label_studio_export.json")
    em.interchange.import_file(src / "earmark.jsonl")
    em.interchange.import_file(src / "label_studio_export.json", fmt="label-studio")
    out = tmp_path / "pairs.parquet"
    assert export_pairs_parquet(em.ctx, out) == 4
    assert export_pairs_parquet(em.ctx, out, source="earmark:earmark.jsonl") == 1
    [row] = pq.read_table(out).to_pylist()
    assert (row["source"], row["chosen"], row["chosen_policy"]) == (
        "earmark:earmark.jsonl",
        "Sunny and mild.",
        "vendor-x",
    )
    assert row["chosen_audio_sha256"] and row["prompt_messages"].startswith("[")

    with em.ctx.engine.connect() as conn:
        raw = conn.connection.driver_connection
        raw.rollback()
        big = "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g) TO STDOUT WITH (FORMAT csv)"
        stream = _CopyOut(raw, big)
        assert stream.read(1000).startswith(b"1,xxx")
        stream.close()  # early: cancelled and drained
        raw.rollback()
        assert raw.execute("SELECT 41 + 1").fetchone() == (42,)
        raw.rollback()
        bad = _CopyOut(raw, "COPY (SELECT 1 / (g - 5000) FROM generate_series(1, 10000) g) TO STDOUT")
        with pytest.raises(psycopg.errors.DivisionByZero):
            while bad.read(1 << 16):
                pass
        bad.close()
        raw.rollback()
        assert raw.execute("SELECT 1").fetchone() == (1,)
        whole = _CopyOut(raw, "COPY (SELECT g FROM generate_series(1, 3) g) TO STDOUT")
        assert whole.read() == b"1\n2\n3\n" and whole.read() == b""
        whole.close()
