"""Chatbot Arena battles, Label Studio and Argilla exports: judgments keep their source and annotator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from interchange_util import DATA, copy_data, counts, state
from sqlalchemy import text

from earmark.errors import InvalidInput


def _rows(em, source: str) -> list[tuple]:  # noqa: ANN001
    with em.session() as db:
        return db.execute(
            text(
                "SELECT e.external_id, e.annotator, e.preference, e.tie, e.both_bad, pa.name, pb.name, e.comment, "
                "e.details FROM external_judgments e JOIN rollouts ra ON ra.id = e.rollout_a_id JOIN policies pa ON "
                "pa.id = ra.policy_id JOIN rollouts rb ON rb.id = e.rollout_b_id JOIN policies pb ON "
                "pb.id = rb.policy_id WHERE e.source = :s ORDER BY e.external_id"
            ),
            {"s": source},
        ).all()


def test_arena_battles(em) -> None:
    before = counts(em)
    s = em.interchange.import_file(DATA / "arena_battles.jsonl")
    assert s.format == "arena" and s.added["judgment"] == 4 and s.added["prompt"] == 4
    rows = _rows(em, "arena:arena_battles.jsonl")
    # by question id: 2564.. tie, 5821.. model_b, 90bf.. model_a, a7c5.. tie (bothbad)
    assert [(r[2], r[3], r[4]) for r in rows] == [
        (0.0, True, False),
        (-1.0, False, False),
        (1.0, False, False),
        (0.0, True, True),
    ]
    assert rows[1][1] == "arena_user_973" and rows[1][5:7] == ("chatglm-6b", "koala-13b")
    assert counts(em)["judgments"] == before["judgments"]
    with em.session() as db:
        kinds = set(db.execute(text("SELECT kind FROM policies WHERE name IN ('koala-13b', 'vicuna-13b')")).scalars())
    assert kinds == {"external"}


def test_arena_unknown_winner_refused(em, tmp_path: Path) -> None:
    rows = [json.loads(x) for x in (DATA / "arena_battles.jsonl").read_text().splitlines()]
    rows[2]["winner"] = "model_c"
    f = tmp_path / "battles.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = state(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f)
    assert (
        "battles.jsonl:3" in exc.value.message
        and "winner" in exc.value.message
        and "tie (bothbad)" in exc.value.message
    )
    assert state(em) == before


def test_label_studio_export(em, tmp_path: Path) -> None:
    src = copy_data(tmp_path / "ls", "label_studio_export.json", "a.wav", "b.wav", "clip.wav")
    s = em.interchange.import_file(src / "label_studio_export.json")
    assert s.format == "label-studio" and s.added["judgment"] == 3 and s.blobs_added == 3  # cancelled one skipped
    rows = _rows(em, "label-studio:label_studio_export.json")
    first = rows[0]
    assert first[1] == "rater1@example.com" and first[2] == 1.0 and first[5:7] == ("tts-alpha", "tts-beta")
    assert first[7] == "B clips the last word" and first[8]["ratings"] == {"naturalness_a": 4}
    assert (rows[1][1], rows[1][3]) == ("7", True)
    assert (rows[2][3], rows[2][4]) == (True, True)


def test_label_studio_audio_url_needs_flag(em, tmp_path: Path) -> None:
    src = copy_data(tmp_path / "ls", "a.wav", "b.wav", "clip.wav")
    doc = json.loads((DATA / "label_studio_export.json").read_text())
    doc[1]["data"]["audio_b"] = "https://example.invalid/clip.wav"
    (src / "export.json").write_text(json.dumps(doc))
    before = state(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(src / "export.json")
    assert "export.json:2" in exc.value.message and "--allow-urls" in exc.value.message
    assert state(em) == before


def test_argilla_records(em) -> None:
    s = em.interchange.import_file(DATA / "argilla_records.jsonl")
    assert s.format == "argilla" and s.added["judgment"] == 2  # rec-2's only response is a draft
    rows = _rows(em, "argilla:argilla_records.jsonl")
    assert [(r[1], r[2]) for r in rows] == [("u-1", 1.0), ("u-2", -1.0)]
    assert rows[0][7] == "simple and right" and rows[0][8]["ratings"] == {"clarity": 5}
    assert rows[1][8]["ratings"] == {"clarity": 3}
