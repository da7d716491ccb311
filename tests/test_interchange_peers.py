"""Exports built by the peers' own code (their SDKs), imported into earmark.

Argilla: records made with ``argilla.Record``/``argilla.Response`` and written by Argilla's own export
code (``GenericIO.to_list(flatten=True)``, what ``dataset.records.to_list(flatten=True)`` calls, and
``JsonIO.to_json``, what ``dataset.records.to_json(path)`` calls); no Argilla server is needed for that.
Label Studio: earmark's sample export read by Label Studio's own converter
(``label_studio_sdk.converter.Converter``), so the fixture is one Label Studio itself parses.

The SDKs come with the test install (``./run``: Argilla and the converter's imports from the test
extra, ``label-studio-sdk`` itself with ``--no-deps``, since its declared tree pulls opencv and a
code generator the converter never touches), so these tests run wherever the suite does.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from interchange_util import DATA
from test_interchange_annotations import _rows


def _argilla_records(draft: bool = False):  # noqa: ANN202
    import argilla as rg

    u1, u2, u3 = (uuid.UUID(int=i) for i in (1, 2, 3))
    return [
        rg.Record(
            id="pair-1",
            fields={
                "prompt": "Is 17 prime?",
                "response_1": "Yes: its only divisors are 1 and 17.",
                "response_2": "No.",
            },
            responses=[
                rg.Response("preference", "response_1", user_id=u1, status="submitted"),
                rg.Response("clarity", 5, user_id=u1, status="submitted"),
                rg.Response("notes", "names the divisors", user_id=u1, status="submitted"),
                rg.Response("preference", "tie", user_id=u2, status="submitted"),
                rg.Response("clarity", 3, user_id=u2, status="submitted"),
            ],
        ),
        rg.Record(
            id="pair-2",
            fields={"prompt": "Say hello.", "response_1": "Hello!", "response_2": "Goodbye."},
            responses=[
                rg.Response("preference", "response_2", user_id=u3, status="submitted"),
                *([rg.Response("preference", "response_1", user_id=u1, status="draft")] if draft else []),
            ],
        ),
    ], (u1, u2, u3)


def test_argilla_flattened_export_made_by_argilla_imports(em, tmp_path: Path) -> None:
    records, (u1, u2, u3) = _argilla_records(draft=True)
    from argilla.records._io import GenericIO

    rows = GenericIO.to_list(records, flatten=True)
    assert rows[1]["preference.responses.status"] == ["submitted", "draft"]  # Argilla's own flattening
    f = tmp_path / "argilla_flat.jsonl"
    f.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    s = em.interchange.import_file(f)
    assert s.format == "argilla" and s.added == {"persona": 0, "prompt": 2, "response": 4, "judgment": 3}
    got = {(r[1], r[2], r[3]): r for r in _rows(em, "argilla:argilla_flat.jsonl")}
    assert set(got) == {(str(u1), 1.0, False), (str(u2), 0.0, True), (str(u3), -1.0, False)}  # the draft is left out
    mine = got[(str(u1), 1.0, False)]
    assert mine[7] == "names the divisors" and mine[8]["ratings"] == {"clarity": 5}


def test_argilla_nested_to_json_made_by_argilla_imports(em, tmp_path: Path) -> None:
    records, (u1, u2, u3) = _argilla_records()
    from argilla.records._io import JsonIO

    f = JsonIO.to_json(records, tmp_path / "argilla_records.json")
    nested = json.loads(f.read_text())
    assert "fields" in nested[0] and isinstance(nested[0]["responses"], dict)  # Argilla's nested form
    s = em.interchange.import_file(f)
    assert s.format == "argilla" and s.added["judgment"] == 3 and s.added["prompt"] == 2
    got = {(r[1], r[2], r[3]) for r in _rows(em, "argilla:argilla_records.json")}
    assert got == {(str(u1), 1.0, False), (str(u2), 0.0, True), (str(u3), -1.0, False)}
    # the same records again, flattened by Argilla: identical prompts, responses and judgments
    from argilla.records._io import GenericIO

    flat = tmp_path / "argilla_records.jsonl"
    flat.write_text("".join(json.dumps(r, default=str) + "\n" for r in GenericIO.to_list(records, flatten=True)))
    assert {(r[1], r[2], r[3]) for r in _rows(em, "argilla:argilla_records.jsonl")} == set()
    s2 = em.interchange.import_file(flat)
    assert s2.added["judgment"] == 3 and s2.added["prompt"] == 0 and s2.unchanged["prompt"] == 2


LS_CONFIG = """<View>
  <Text name="prompt" value="$prompt"/>
  <Audio name="audio_a" value="$audio_a"/>
  <Audio name="audio_b" value="$audio_b"/>
  <Choices name="preference" toName="audio_a" choice="single">
    <Choice value="A"/><Choice value="B"/><Choice value="Tie"/><Choice value="Both bad"/>
  </Choices>
  <Rating name="naturalness_a" toName="audio_a" maxRating="5"/>
  <TextArea name="comment" toName="audio_a"/>
</View>"""


def test_label_studio_own_converter_reads_the_sample_export_as_earmark_does(em, tmp_path: Path) -> None:
    """Label Studio's converter and earmark read the same annotations from the sample export: the same
    choices (cancelled ones left out by both), ratings and comments."""
    from label_studio_sdk import converter

    # its __init__ swallows a missing dependency: say which instead of an AttributeError later
    assert hasattr(converter, "Converter"), "label_studio_sdk.converter.Converter did not import (see ./run)"
    from interchange_util import copy_data

    from earmark.interchange.label_studio import choice_value

    c = converter.Converter(config=LS_CONFIG, project_dir=str(tmp_path), download_resources=False)
    items = list(c.iter_from_json_file(str(DATA / "label_studio_export.json")))
    assert items[0]["input"]["audio_a"] == "/data/local-files/?d=a.wav"
    ls = sorted(choice_value(it["output"]["preference"][0]["choices"][0].lower()) for it in items)
    ls_ratings = [it["output"]["naturalness_a"][0]["rating"] for it in items if "naturalness_a" in it["output"]]
    ls_comments = [it["output"]["comment"][0]["text"][0] for it in items if "comment" in it["output"]]

    src = copy_data(tmp_path / "ls", "label_studio_export.json", "a.wav", "b.wav", "clip.wav")
    em.interchange.import_file(src / "label_studio_export.json")
    rows = _rows(em, "label-studio:label_studio_export.json")
    assert sorted((r[2], r[3], r[4]) for r in rows) == ls  # 3 of the 4 annotations: one was cancelled
    assert [r[8]["ratings"]["naturalness_a"] for r in rows if (r[8] or {}).get("ratings")] == ls_ratings == [4]
    assert [r[7] for r in rows if r[7]] == ls_comments
