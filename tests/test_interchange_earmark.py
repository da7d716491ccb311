"""earmark JSONL import: prompts, personas, responses, judgments; conflicts; round trip; schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from interchange_util import DATA, copy_data, counts, state
from sqlalchemy import text

from earmark.errors import Conflict, InvalidInput
from earmark.interchange import detect
from earmark.interchange.records import schemas


def test_detects_every_sample_file() -> None:
    expected = {
        "earmark.jsonl": "earmark",
        "openai_chat.jsonl": "openai",
        "hf_plain.jsonl": "hf",
        "hf_conversational.jsonl": "hf",
        "arena_battles.jsonl": "arena",
        "label_studio_export.json": "label-studio",
        "argilla_records.jsonl": "argilla",
    }
    for name, fmt in expected.items():
        assert detect(DATA / name).name == fmt, name


def test_import_all_kinds_with_audio(em, tmp_path: Path) -> None:
    before = counts(em)
    src = copy_data(tmp_path / "in", "earmark.jsonl", "clip.wav", "a.wav", "b.wav")
    summary = em.interchange.import_file(src / "earmark.jsonl")
    assert summary.format == "earmark"
    assert summary.added == {"persona": 1, "prompt": 1, "response": 2, "judgment": 1}
    assert summary.blobs_added == 3 and summary.policies_added == 2
    after = counts(em)
    assert after["judgments"] == before["judgments"]  # never passes as earmark raters' work
    assert after["external_judgments"] == before["external_judgments"] + 1
    with em.session() as s:
        j = s.execute(
            text(
                "SELECT e.source, e.annotator, e.preference, e.confidence, e.comment, pa.name, pa.kind, ra.text "
                "FROM external_judgments e JOIN rollouts ra ON ra.id = e.rollout_a_id "
                "JOIN policies pa ON pa.id = ra.policy_id WHERE e.external_id = 'j1'"
            )
        ).one()
        assert j == (
            "earmark:earmark.jsonl",
            "alice@vendor",
            1.0,
            0.8,
            "A sounds calmer",
            "vendor-x",
            "external",
            "Sunny and mild.",
        )
        p = s.execute(text("SELECT messages, audio_sha256 FROM prompts WHERE external_id = 'ix-weather-1'")).one()
        part = p.messages[0]["content"][1]
        assert part["audio_sha256"] == p.audio_sha256 and "path" not in part
    assert em.ctx.blobs.exists(p.audio_sha256)
    # the same file again: everything unchanged, nothing added
    again = em.interchange.import_file(src / "earmark.jsonl")
    assert sum(again.added.values()) == 0 and again.unchanged["judgment"] == 1 and again.blobs_added == 0
    assert counts(em) == after


def test_corrected_reimport_per_on_conflict(em, tmp_path: Path) -> None:
    src = copy_data(tmp_path / "in", "earmark.jsonl", "clip.wav", "a.wav", "b.wav")
    em.interchange.import_file(src / "earmark.jsonl")
    lines = (src / "earmark.jsonl").read_text().splitlines()
    j = json.loads(lines[4])
    j["preference"] = -0.5
    j["comment"] = "on second listen B is better"
    r = json.loads(lines[2])
    r["text"] = "Sunny and mild, 21 degrees."
    lines[4], lines[2] = json.dumps(j), json.dumps(r)
    (src / "fixed.jsonl").write_text("\n".join(lines) + "\n")
    snap = state(em)
    with pytest.raises(Conflict) as exc:
        em.interchange.import_file(src / "fixed.jsonl")
    assert "--on-conflict update" in exc.value.message and "line 3" in exc.value.message
    assert state(em) == snap

    def stored() -> tuple:
        with em.session() as s:
            return s.execute(
                text(
                    "SELECT e.preference, e.comment, ra.text FROM external_judgments e JOIN rollouts ra ON "
                    "ra.id = e.rollout_a_id WHERE e.external_id = 'j1'"
                )
            ).one()

    # the source of a judgment defaults to the file name: keep it stable for the conflict check
    (src / "earmark.jsonl").write_text((src / "fixed.jsonl").read_text())
    skipped = em.interchange.import_file(src / "earmark.jsonl", on_conflict="skip")
    assert skipped.skipped == {"persona": 0, "prompt": 0, "response": 1, "judgment": 1}
    assert stored() == (1.0, "A sounds calmer", "Sunny and mild.")
    updated = em.interchange.import_file(src / "earmark.jsonl", on_conflict="update")
    assert updated.updated["judgment"] == 1 and updated.updated["response"] == 1
    assert stored() == (-0.5, "on second listen B is better", "Sunny and mild, 21 degrees.")


def test_schema_covers_every_kind() -> None:
    s = schemas()
    assert set(s) == {"prompt", "persona", "response", "judgment"}
    assert {"a", "b", "preference", "annotator"} <= set(s["judgment"]["properties"])
    assert s["prompt"]["properties"]["kind"]["const"] == "prompt"


def test_foreign_file_names_format_and_fix(em, tmp_path: Path) -> None:
    f = tmp_path / "mystery.jsonl"
    f.write_text(json.dumps({"question": "hi", "answer": "yo"}) + "\n")
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f)
    msg = exc.value.message
    assert "could not be detected" in msg and "--format" in msg and "earmark schema" in msg
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f, fmt="earmark")
    assert ":1" in exc.value.message and "kind" in exc.value.message


def test_field_error_names_line_field_format_fix(em, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps({"external_id": "ok-1", "regime": "asr", "messages": [{"role": "user", "content": "x"}]})
        + "\n"
        + json.dumps({"external_id": "ok-2", "regime": "speech", "messages": [{"role": "user", "content": "x"}]})
        + "\n"
    )
    before = counts(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f)
    msg = exc.value.message
    assert f"{f}:2" in msg and "field regime" in msg and "earmark schema earmark" in msg and "fix" in msg
    assert counts(em) == before


def test_docs_carry_the_current_schemas() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "interchange.md").read_text()
    for kind, schema in schemas().items():
        assert f"### {kind}\n\n```json\n{json.dumps(schema, indent=2)}\n```" in doc, f"docs schema of {kind} is stale"


def test_interleaved_kinds_stream_through_switching_copies(em, tmp_path: Path, monkeypatch) -> None:
    """Rows of one kind stream in one COPY; another kind's full batch switches the stream; a bad
    line after many staged rows still leaves nothing."""
    import earmark.services.interchange as svc

    monkeypatch.setattr(svc, "BATCH_ROWS", 2)
    lines = []
    for i in range(7):
        lines.append({"external_id": f"p{i}", "regime": "asr", "messages": [{"role": "user", "content": f"q{i}"}]})
        lines.append({"prompt": f"p{i}", "policy": "vendor", "text": f"a{i}"})
        if i % 3 == 0:
            lines.append({"prompt": f"p{i}", "policy": "other", "text": f"b{i}"})
    f = tmp_path / "mixed.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = counts(em)
    f_bad = tmp_path / "mixed_bad.jsonl"
    f_bad.write_text(f.read_text() + json.dumps({"prompt": "p1", "policy": "vendor", "text": 5}) + "\n")
    with pytest.raises(InvalidInput, match=r"mixed_bad.jsonl:18 \(response\): field text"):
        em.interchange.import_file(f_bad)
    assert counts(em) == before
    summary = em.interchange.import_file(f)
    assert summary.added == {"persona": 0, "prompt": 7, "response": 10, "judgment": 0}
    with em.session() as s:
        got = s.execute(
            text("SELECT p.external_id, r.text FROM rollouts r JOIN prompts p ON p.id = r.prompt_id ORDER BY r.text")
        ).all()
    assert [t for _, t in got] == sorted([f"a{i}" for i in range(7)] + [f"b{i}" for i in (0, 3, 6)])
    assert all(t[1:] == pid[1:] for pid, t in got)
