"""Label Studio JSON export of a pairwise (audio) comparison project.

A JSON array of tasks: ``{"id", "data": {"prompt"|"text"|"question", "audio"?, "audio_a"|"response_a",
"audio_b"|"response_b", "model_a"?, "model_b"?}, "annotations": [{"id", "completed_by", "was_cancelled",
"result": [{"from_name", "type": "choices"|"rating"|"textarea", "value": {...}}]}]}``.
Audio values may be paths (``/data/local-files/?d=sub/a.wav`` or relative), or URLs (fetched only with
``--allow-urls``). The choice picks A, B, a tie or both bad; ratings go to ``details.ratings``, a
textarea to the comment; the annotator is ``completed_by`` (email or id). Cancelled annotations are
skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from earmark.interchange.base import Adapter, Record, Sample, iter_rows, slug, user_content

CHOICES = {
    **dict.fromkeys(
        ("a", "left", "first", "1", "response_a", "audio_a", "a is better", "model_a", "response_1", "response1"),
        (1.0, False, False),
    ),
    **dict.fromkeys(
        ("b", "right", "second", "2", "response_b", "audio_b", "b is better", "model_b", "response_2", "response2"),
        (-1.0, False, False),
    ),
    **dict.fromkeys(("tie", "equal", "same", "both good", "draw"), (0.0, True, False)),
    **dict.fromkeys(("both bad", "neither", "tie (bothbad)", "bothbad"), (0.0, True, True)),
}


def choice_value(v: str) -> tuple[float, bool, bool] | None:
    return CHOICES.get(str(v).strip().lower())


def ls_audio(v: Any) -> dict[str, Any] | None:
    if not isinstance(v, str) or not v:
        return None
    if v.startswith(("http://", "https://")):
        return {"type": "audio", "path": v}
    u = urlparse(v)
    if u.path.startswith("/data/local-files/"):
        d = parse_qs(u.query).get("d", [""])[0]
        return {"type": "audio", "path": d}
    if v.startswith("/data/"):
        return {"type": "audio", "path": v[len("/data/") :]}
    return {"type": "audio", "path": v}


class LabelStudio(Adapter):
    name = "label-studio"
    description = "Label Studio JSON export (tasks, audio URLs/paths, choices, ratings, textarea comments)"
    expected = '[{"id", "data": {"prompt", "audio_a", "audio_b"}, "annotations": [{"completed_by", "result"}]}]'

    def detect(self, sample: Sample) -> bool:
        return bool(sample.rows) and all(
            isinstance(r, dict) and isinstance(r.get("data"), dict) and "annotations" in r for r in sample.rows
        )

    def iter_records(self, path: Path) -> Iterator[Record]:
        source = f"label-studio:{path.name}"
        for no, task in iter_rows(path, self.name):
            if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
                raise self.refuse(path, no, "data", "is missing", "export tasks with their data (JSON export)")
            data, tid = task["data"], task.get("id", no)
            ptext = data.get("prompt") or data.get("text") or data.get("question") or ""
            content = user_content(ptext, ls_audio(data.get("audio") or data.get("prompt_audio")))
            if not content:
                raise self.refuse(path, no, "data.prompt", "is missing", "give the prompt text or audio")
            ext = slug(f"ls-{path.stem}-{tid}")
            yield Record(
                no,
                "prompt",
                {
                    "external_id": ext,
                    "regime": data.get("regime")
                    or ("tts" if data.get("audio_a") and not data.get("audio") else "realtime"),
                    "messages": [{"role": "user", "content": content}],
                },
            )
            refs = {}
            for side in ("a", "b"):
                audio = ls_audio(data.get(f"audio_{side}"))
                text = data.get(f"response_{side}") or data.get(f"text_{side}") or ""
                if audio is None and not text:
                    raise self.refuse(
                        path, no, f"data.audio_{side}", "is missing", f"give audio_{side} or response_{side}"
                    )
                model = data.get(f"model_{side}")
                refs[side] = {"policy": slug(str(model or f"label-studio-{side}")), "sample_index": 0}
                if model and side == "b" and refs["a"]["policy"] == refs["b"]["policy"]:
                    refs["b"]["sample_index"] = 1
                resp: dict[str, Any] = {"prompt": ext, **refs[side], "text": str(text)}
                if audio is not None:
                    resp["audio"] = audio
                yield Record(no, "response", resp, f"data.audio_{side}")
            for k, ann in enumerate(task.get("annotations") or []):
                if not isinstance(ann, dict) or ann.get("was_cancelled"):
                    continue
                pref, ratings, comment, raw = None, {}, None, None
                for r in ann.get("result") or []:
                    value, typ = r.get("value") or {}, r.get("type")
                    if typ == "choices" and value.get("choices"):
                        raw = value["choices"][0]
                        pref = choice_value(raw)
                        if pref is None:
                            raise self.refuse(
                                path,
                                no,
                                f"annotations[{k}].result.value.choices",
                                f"is {raw!r}",
                                "name the choices A, B, Tie or Both bad",
                            )
                    elif typ == "rating" and "rating" in value:
                        ratings[r.get("from_name", "rating")] = value["rating"]
                    elif typ == "textarea" and value.get("text"):
                        comment = "\n".join(map(str, value["text"]))
                if pref is None:
                    continue  # a rating-only annotation: no preference to record
                by = ann.get("completed_by")
                annotator = (
                    by.get("email") or str(by.get("id")) if isinstance(by, dict) else (None if by is None else str(by))
                )
                yield Record(
                    no,
                    "judgment",
                    {
                        "external_id": slug(f"ls-{tid}-{ann.get('id', k)}"),
                        "source": source,
                        "annotator": annotator,
                        "prompt": ext,
                        "a": refs["a"],
                        "b": refs["b"],
                        "preference": pref[0],
                        "tie": pref[1],
                        "both_bad": pref[2],
                        "comment": comment,
                        "details": {"choice": raw, **({"ratings": ratings} if ratings else {})},
                    },
                    f"annotations[{k}]",
                )
