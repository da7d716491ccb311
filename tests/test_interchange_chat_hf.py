"""OpenAI chat rows and Hugging Face preference datasets (plain, conversational, parquet/arrow, audio columns)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from audio_util import tone_wav
from interchange_util import DATA, copy_data, state
from sqlalchemy import text

from earmark.errors import InvalidInput


def test_openai_chat_audio_tools_references(em) -> None:
    s = em.interchange.import_file(DATA / "openai_chat.jsonl")
    assert s.format == "openai" and s.added["prompt"] == 3 and s.added["response"] == 2 and s.blobs_added == 1
    with em.session() as db:
        rows = dict(
            db.execute(
                text("SELECT external_id, row_to_json(p) FROM prompts p WHERE external_id LIKE 'openai_chat-%'")
            ).all()
        )
        q1, q2, q3 = rows["openai_chat-q1"], rows["openai_chat-q2"], rows["openai_chat-q3"]
        assert q1["regime"] == "realtime" and q1["reference"] == {"answer": "42"}
        assert q1["messages"][1]["content"][1]["type"] == "audio" and q1["audio_sha256"]
        assert q2["tools"][0]["function"]["name"] == "book_table"
        assert q2["reference"]["tool_calls"][0]["arguments"] == {"people": 2, "time": "19:00"}
        assert q3["reference"] == {"answer": "4"} and q3["regime"] == "reasoning"
        calls = db.execute(
            text(
                "SELECT r.tool_calls, po.kind, po.name FROM rollouts r JOIN prompts p ON "
                "p.id = r.prompt_id JOIN policies po ON po.id = r.policy_id WHERE "
                "p.external_id = 'openai_chat-q2'"
            )
        ).one()
        assert calls == (
            [{"name": "book_table", "arguments": {"people": 2, "time": "19:00"}}],
            "external",
            "gpt-4o-audio-preview",
        )


def test_openai_bad_tool_arguments_refused(em, tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{not json"}}],
            },
        ]
    }
    f = tmp_path / "chat.jsonl"
    f.write_text(json.dumps(row) + "\n")
    before = state(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f)
    assert "chat.jsonl:1" in exc.value.message and "arguments" in exc.value.message and "openai" in exc.value.message
    assert state(em) == before


def _judgments(em, source: str) -> list[tuple]:  # noqa: ANN001
    with em.session() as db:
        return db.execute(
            text(
                "SELECT e.preference, ra.text, rb.text FROM external_judgments e JOIN rollouts ra ON "
                "ra.id = e.rollout_a_id JOIN rollouts rb ON rb.id = e.rollout_b_id WHERE e.source = :s ORDER BY e.id"
            ),
            {"s": source},
        ).all()


def test_hf_plain_and_conversational(em, tmp_path: Path) -> None:
    s = em.interchange.import_file(DATA / "hf_plain.jsonl")
    assert s.format == "hf" and s.added["judgment"] == 2
    assert _judgments(em, "hf:hf_plain.jsonl") == [(1.0, "Hello there, so good to see you!", "hi."), (1.0, "7", "8")]
    src = copy_data(tmp_path / "in", "hf_conversational.jsonl", "a.wav", "b.wav")
    s = em.interchange.import_file(src / "hf_conversational.jsonl")
    assert s.added["judgment"] == 2 and s.blobs_added == 2
    got = _judgments(em, "hf:hf_conversational.jsonl")
    assert got[1] == (1.0, "Paris.", "Lyon.")  # implicit prompt: the shared prefix


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_hf_tables_with_audio_columns(em, tmp_path: Path, suffix: str) -> None:
    wa, wb, wp = tone_wav(0.1, hz=300), tone_wav(0.1, hz=600), tone_wav(0.1, hz=900)
    audio = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    msgs = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    table = pa.table(
        {
            "prompt": pa.array([[{"role": "user", "content": "Say it calmly."}]], msgs),
            "chosen": pa.array([[{"role": "assistant", "content": "It is fine."}]], msgs),
            "rejected": pa.array([[{"role": "assistant", "content": "IT IS FINE"}]], msgs),
            "audio": pa.array([{"bytes": wp, "path": "p.wav"}], audio),
            "chosen_audio": pa.array([{"bytes": wa, "path": "a.wav"}], audio),
            "rejected_audio": pa.array([{"bytes": wb, "path": "b.wav"}], audio),
        }
    )
    f = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        pq.write_table(table, f)
    else:
        with pa.ipc.new_stream(f, table.schema) as w:  # what datasets' save_to_disk writes
            w.write_table(table)
    s = em.interchange.import_file(f, fmt="hf")
    assert s.added == {"persona": 0, "prompt": 1, "response": 2, "judgment": 1} and s.blobs_added == 3
    with em.session() as db:
        p = db.execute(text("SELECT messages FROM prompts WHERE external_id = 'train-1'")).scalar_one()
        assert p[0]["content"][1]["type"] == "audio"
        shas = (
            db.execute(
                text(
                    "SELECT r.audio_sha256 FROM rollouts r JOIN prompts p ON p.id = r.prompt_id "
                    "WHERE p.external_id = 'train-1' ORDER BY r.sample_index"
                )
            )
            .scalars()
            .all()
        )
    assert all(em.ctx.blobs.exists(x) for x in shas) and len(set(shas)) == 2


def test_hf_missing_rejected_refused(em, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"})
        + "\n"
        + json.dumps({"prompt": "p", "chosen": "a", "rejected": 5})
        + "\n"
    )
    before = state(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f)
    assert "bad.jsonl:2" in exc.value.message and "rejected" in exc.value.message
    assert state(em) == before
