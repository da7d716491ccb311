"""Prompt and persona import: audio by path/base64 becomes blobs; bad input writes nothing."""

from __future__ import annotations

import base64
import json

import pytest
from audio_util import tone_wav

from earmark.errors import InvalidInput, NotFound
from earmark.store.models import Blob


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_import_prompts_with_audio(em, tmp_path) -> None:
    (tmp_path / "q.wav").write_bytes(tone_wav(0.75, 16000))
    em.catalog.import_personas([{"name": "coach", "prosody": {"rate_wps": 3.0}}])
    f = _write_jsonl(
        tmp_path / "prompts.jsonl",
        [
            {
                "external_id": "a1",
                "regime": "asr",
                "reference": {"text": "hello"},
                "messages": [{"role": "user", "content": [{"type": "audio", "path": "q.wav"}]}],
            },
            {
                "external_id": "a2",
                "regime": "realtime",
                "persona": "coach",
                "messages": [
                    {"role": "system", "content": "be upbeat"},
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "hi"},
                            {"type": "audio", "base64": base64.b64encode(tone_wav(0.5, 22050)).decode()},
                        ],
                    },
                ],
            },
        ],
    )
    rep = em.catalog.import_prompts(f)
    assert rep.added == 2
    prompts = {p.external_id: p for p in em.catalog.prompts()}
    part = prompts["a1"].messages[0]["content"][0]
    assert part["type"] == "audio" and "path" not in part and part["audio_sha256"] == prompts["a1"].audio_sha256
    with em.session() as s:
        blob = s.get(Blob, prompts["a1"].audio_sha256)
        assert blob.sample_rate == 16000 and abs(blob.duration_s - 0.75) < 1e-6 and blob.mime == "audio/wav"
    assert em.blobs.read(prompts["a2"].audio_sha256)[:4] == b"RIFF"
    assert em.catalog.import_prompts(f).added == 0  # re-import is a no-op


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40, "could not be decoded"),
        (b"this is not audio at all, just text bytes................", "could not be decoded"),
        (b"RIF", "too short"),
    ],
)
def test_bad_audio_refused_and_nothing_written(em, tmp_path, payload, needle) -> None:
    (tmp_path / "bad.wav").write_bytes(payload)
    f = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"external_id": "ok", "regime": "asr", "messages": [{"role": "user", "content": "fine"}]},
            {
                "external_id": "b",
                "regime": "asr",
                "messages": [{"role": "user", "content": [{"type": "audio", "path": "bad.wav"}]}],
            },
        ],
    )
    with pytest.raises(InvalidInput, match=needle):
        em.catalog.import_prompts(f)
    assert em.catalog.prompts() == []


def test_truncated_wav_refused(em, tmp_path) -> None:
    data = tone_wav(1.0)
    (tmp_path / "cut.wav").write_bytes(data[: len(data) // 2])
    f = _write_jsonl(
        tmp_path / "p.jsonl",
        [
            {
                "external_id": "b",
                "regime": "asr",
                "messages": [{"role": "user", "content": [{"type": "audio", "path": "cut.wav"}]}],
            }
        ],
    )
    with pytest.raises(InvalidInput, match="truncated|decoded"):
        em.catalog.import_prompts(f)


def test_unknown_persona_and_bad_utf8(em, tmp_path) -> None:
    with pytest.raises(InvalidInput, match=r"prompts:1: field persona: persona .ghost. is not registered"):
        em.catalog.import_prompts(
            [{"external_id": "x", "regime": "asr", "persona": "ghost", "messages": [{"role": "user", "content": "hi"}]}]
        )
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"name": "ok"}\n{"name": "\xff\xfe"}\n')
    with pytest.raises(InvalidInput, match=r"bad.jsonl:2: not valid UTF-8"):
        em.catalog.import_personas(bad)
    with pytest.raises(NotFound, match="earmark personas import"):
        em.catalog.persona("ok")


def test_import_prompts_goes_through_the_interchange_import(em, tmp_path) -> None:
    """The Python API is the interchange import: same audit entry, conflicts, confinement, all-or-nothing."""
    from sqlalchemy import select

    from earmark.errors import Conflict
    from earmark.store.models import AuditLog

    rec = {"external_id": "q1", "regime": "asr", "messages": [{"role": "user", "content": "hello"}]}
    rep = em.catalog.import_prompts([rec], source="api prompts")
    assert (rep.added, rep.skipped, list(rep.ids)) == (1, 0, ["q1"])
    with em.session() as s:
        [entry] = s.scalars(select(AuditLog).where(AuditLog.action == "interchange.import")).all()
    assert entry.details["source"] == "api prompts" and entry.details["added"]["prompt"] == 1
    # identical again: already present; changed content: refused by default, replaced on request
    assert em.catalog.import_prompts([rec]).skipped == 1
    changed = {**rec, "messages": [{"role": "user", "content": "hello again"}]}
    with pytest.raises(Conflict, match=r"1 prompt\(s\) differ from the stored ones \(line 1: q1\)"):
        em.catalog.import_prompts([changed])
    assert em.catalog.prompts()[0].messages[0]["content"] == "hello"
    rep = em.catalog.import_prompts([changed], on_conflict="update")
    assert (rep.added, rep.skipped, rep.ids) == (0, 1, {"q1": em.catalog.prompts()[0].id})
    assert em.catalog.prompts()[0].messages[0]["content"] == "hello again"
    # audio paths of records stay under the audio root (default: the current directory); nothing is written
    (tmp_path / "q.wav").write_bytes(tone_wav(0.5))
    audio = {
        "external_id": "q2",
        "regime": "asr",
        "messages": [{"role": "user", "content": [{"type": "audio", "path": str(tmp_path / "q.wav")}]}],
    }
    with pytest.raises(
        InvalidInput,
        match=r"prompts:2 \(prompt\): messages\[0\]\.content\[0\]: audio path .* is outside the audio root",
    ):
        em.catalog.import_prompts([{**rec, "external_id": "q3"}, audio])
    assert [p.external_id for p in em.catalog.prompts()] == ["q1"]
    assert list(em.ctx.blobs.iter_digests()) == []
    rep = em.catalog.import_prompts([audio], audio_root=tmp_path)
    assert rep.added == 1 and em.blobs.read(em.catalog.prompts(external_ids=["q2"])[0].audio_sha256)[:4] == b"RIFF"
