"""Hostile input: every refusal is an InvalidInput naming line and fix, and leaves rows and blob files as they were."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from audio_util import tone_wav
from interchange_util import DATA, copy_data, state

from earmark.domain.limits import Limits
from earmark.errors import InvalidInput


def _prompt(i: int, content: object = "hello") -> dict:
    return {"external_id": f"h-{i}", "regime": "asr", "messages": [{"role": "user", "content": content}]}


def _refused(em, f: Path, *needles: str, **kw) -> str:  # noqa: ANN001, ANN003
    before = state(em)
    with pytest.raises(InvalidInput) as exc:
        em.interchange.import_file(f, **kw)
    assert state(em) == before, "a refused import changed rows or blob files"
    for n in needles:
        assert n in exc.value.message, (n, exc.value.message)
    return exc.value.message


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (
            '{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "x"}], '
            '"reference": {"score": NaN}}',
            "NaN/Infinity",
        ),
        (
            '{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "x"}], '
            '"reference": {"score": Infinity}}',
            "NaN/Infinity",
        ),
        (
            '{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "x"}], '
            '"reference": {"score": 1e999}}',
            "infinity",
        ),
        ('{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "a\\u0000b"}]}', "NUL"),
        (
            '{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "x"}], '
            '"reference": {"text": "a\\u0000b"}}',
            "NUL",
        ),
        (
            '{"external_id": "h-1", "regime": "asr", "messages": [{"role": "user", "content": "bad \\ud800 x"}]}',
            "surrogate",
        ),
    ],
)
def test_bad_json_values_refused_with_project_errors(em, tmp_path: Path, raw: str, needle: str) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_prompt(0)) + "\n" + raw + "\n")
    _refused(em, f, f"{f}:2", needle)


def test_paired_surrogates_are_fine(em, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(
        '{"external_id": "emoji-1", "regime": "asr", "messages": [{"role": "user", "content": "ok \\ud83d\\ude00"}]}\n'
    )
    assert em.interchange.import_file(f).added["prompt"] == 1


def _audio_prompt(path: str, i: int = 0) -> dict:
    return _prompt(i, [{"type": "text", "text": "x"}, {"type": "audio", "path": path}])


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "device", "symlink_out"])
def test_audio_paths_confined(em, tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside.wav"
    outside.write_bytes(tone_wav(0.1))
    src = tmp_path / "in"
    src.mkdir()
    ref = {"dotdot": "../outside.wav", "absolute": str(outside), "device": "/dev/zero", "symlink_out": "link.wav"}[kind]
    if kind == "symlink_out":
        os.symlink(outside, src / "link.wav")
    f = src / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt(ref)) + "\n")
    msg = _refused(em, f, f"{f}:1")
    assert "--audio-root" in msg or "regular file" in msg


def test_device_under_widened_root_is_not_read(em, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt("/dev/zero")) + "\n")
    _refused(em, f, "not a regular file", audio_root=Path("/dev"))


def test_widened_root_allows_outside_file(em, tmp_path: Path) -> None:
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "c.wav").write_bytes(tone_wav(0.1))
    (tmp_path / "meta").mkdir()
    f = tmp_path / "meta" / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt("../audio/c.wav")) + "\n")
    _refused(em, f, "outside the audio root")
    assert em.interchange.import_file(f, audio_root=tmp_path).blobs_added == 1


def test_oversize_audio_refused_before_reading(em, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    with open(big, "wb") as fh:  # sparse: the size check must refuse it without reading 65 MB
        fh.truncate(Limits.MAX_AUDIO_BYTES + 1)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt("big.wav")) + "\n")
    _refused(em, f, "the limit is", "split the clip")


def test_declared_json_limit_enforced(em, tmp_path: Path) -> None:
    p = _prompt(0)
    p["reference"] = {"text": "x" * (Limits.MAX_JSON_BYTES + 10)}
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(p) + "\n")
    _refused(em, f, "reference", str(Limits.MAX_JSON_BYTES))


def test_urls_only_when_allowed(em, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt("http://127.0.0.1:9/clip.wav")) + "\n")
    _refused(em, f, "--allow-urls")


def test_bad_line_500_after_499_good_lines_with_audio(em, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    rows = []
    for i in range(499):
        (src / f"c{i}.wav").write_bytes(tone_wav(0.05, hz=200 + i))  # distinct clips: 499 blobs would be staged
        rows.append(json.dumps(_audio_prompt(f"c{i}.wav", i)))
    rows.append(json.dumps(_prompt(499)).replace('"asr"', '"speech"'))
    f = src / "p.jsonl"
    f.write_text("\n".join(rows) + "\n")
    _refused(em, f, f"{f}:500", "field regime")


def test_duplicate_ids_in_file_refused(em, tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_prompt(1)) + "\n" + json.dumps(_prompt(1, "other")) + "\n")
    _refused(em, f, "lines 1, 2", "unique")


def test_judgment_of_unknown_response_refused(em, tmp_path: Path) -> None:
    src = copy_data(tmp_path / "in", "clip.wav", "a.wav", "b.wav")
    lines = (DATA / "earmark.jsonl").read_text().splitlines()
    del lines[3]  # the response of vendor-y
    (src / "e.jsonl").write_text("\n".join(lines) + "\n")
    _refused(em, src / "e.jsonl", "e.jsonl:4", "unknown response vendor-y")


def test_corrupt_audio_and_not_a_regular_import_file(em, tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"RIFF" + b"\x00" * 100)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_audio_prompt("junk.wav")) + "\n")
    _refused(em, f, f"{f}:1")
    with pytest.raises(InvalidInput, match="not a regular file"):
        em.interchange.import_file(Path("/dev/zero"))
