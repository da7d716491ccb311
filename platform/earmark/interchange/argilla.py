"""Argilla 2.x record export (``dataset.records.to_list(flatten=True)``, ``to_json`` or ``to_hub``).

Flattened records: fields as columns (``prompt``/``instruction``/``text``, ``response_a``/``response_1``,
``response_b``/``response_2``, optional ``audio``, ``audio_a``, ``audio_b``), and per question
``<q>.responses`` (values), ``<q>.responses.users`` (user ids), ``<q>.responses.status``. A label
question whose values are A/B/tie/both-bad (or ``response_a``...) is the preference; a ranking question
(``[{"value", "rank"}]``) works too; integer questions go to ``details.ratings``, text ones to the
comment. Only ``submitted`` responses are imported; the annotator is the Argilla user id.

The nested form that ``dataset.records.to_json(path)`` writes (``{"id", "fields": {...}, "metadata",
"responses": {"<q>": [{"value", "user_id"}]}}``, a JSON array) is flattened the way Argilla's own
``to_list(flatten=True)`` does; Argilla leaves the response status out of that form, so every response
in it is taken as submitted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earmark.interchange.base import Adapter, Record, Sample, iter_rows, slug, user_content
from earmark.interchange.label_studio import choice_value, ls_audio


def flatten(rec: Any) -> Any:
    """A nested Argilla record (``Record.to_dict()``) in the flattened form; others unchanged."""
    if not (isinstance(rec, dict) and isinstance(rec.get("fields"), dict) and isinstance(rec.get("responses"), dict)):
        return rec
    out = {k: v for k, v in rec.items() if k not in ("fields", "metadata", "vectors", "responses", "suggestions")}
    out.update(rec["fields"])
    out.update(rec.get("metadata") or {})
    for q, answers in rec["responses"].items():
        answers = [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []
        out[f"{q}.responses"] = [a.get("value") for a in answers]
        out[f"{q}.responses.users"] = [a.get("user_id") for a in answers]
        out[f"{q}.responses.status"] = [a.get("status", "submitted") for a in answers]
    return out


def _pref(v: Any) -> tuple[float, bool, bool] | None:
    if isinstance(v, str):
        return choice_value(v)
    if isinstance(v, list) and v and all(isinstance(x, dict) and "rank" in x for x in v):
        ranks = {str(x.get("value")).lower(): x["rank"] for x in v}
        ra = next((r for k, r in ranks.items() if choice_value(k) == (1.0, False, False)), None)
        rb = next((r for k, r in ranks.items() if choice_value(k) == (-1.0, False, False)), None)
        if ra is None or rb is None:
            return None
        return (1.0, False, False) if ra < rb else (-1.0, False, False) if rb < ra else (0.0, True, False)
    return None


class Argilla(Adapter):
    name = "argilla"
    description = (
        "Argilla 2.x record export: flattened (fields + <question>.responses / .users / .status) or nested "
        "(records.to_json)"
    )
    expected = '{"id", "prompt", "response_a", "response_b", "<question>.responses": [...], ".users": [...]}'

    def detect(self, sample: Sample) -> bool:
        return bool(sample.rows) and all(
            isinstance(r, dict) and any(k.endswith(".responses") for k in flatten(r)) for r in sample.rows
        )

    def iter_records(self, path: Path) -> Iterator[Record]:
        source = f"argilla:{path.name}"
        for no, row in iter_rows(path, self.name):
            rec = flatten(row)
            if not isinstance(rec, dict):
                raise self.refuse(path, no, "(record)", "is not an object", "export flattened records")
            rid = rec.get("id") or rec.get("_server_id") or no
            ptext = rec.get("prompt") or rec.get("instruction") or rec.get("text") or ""
            a = ls_audio(rec.get("audio"))
            content = user_content(ptext, a)
            if not content:
                raise self.refuse(path, no, "prompt", "is missing", "give a prompt/instruction/text field")
            ext = slug(f"argilla-{path.stem}-{rid}")
            yield Record(
                no,
                "prompt",
                {
                    "external_id": ext,
                    "regime": rec.get("regime") or ("realtime" if a else "reasoning"),
                    "messages": [{"role": "user", "content": content}],
                },
            )
            refs = {}
            for side, alt in (("a", "1"), ("b", "2")):
                text = rec.get(f"response_{side}") or rec.get(f"response_{alt}") or rec.get(f"response{alt}") or ""
                audio = ls_audio(rec.get(f"audio_{side}"))
                if audio is None and not text:
                    raise self.refuse(
                        path,
                        no,
                        f"response_{side}",
                        "is missing",
                        f"give response_{side} (or response_{alt}) or audio_{side}",
                    )
                refs[side] = {"policy": slug(str(rec.get(f"model_{side}") or f"argilla-{side}")), "sample_index": 0}
                resp: dict[str, Any] = {"prompt": ext, **refs[side], "text": str(text)}
                if audio is not None:
                    resp["audio"] = audio
                yield Record(no, "response", resp, f"response_{side}")
            if refs["a"] == refs["b"]:
                refs["b"]["sample_index"] = 1
            questions = [k[: -len(".responses")] for k in rec if k.endswith(".responses")]
            pref_q = next((q for q in questions if any(_pref(v) for v in rec.get(f"{q}.responses") or [])), None)
            if pref_q is None:
                continue
            values = rec.get(f"{pref_q}.responses") or []
            users = rec.get(f"{pref_q}.responses.users") or [None] * len(values)
            status = rec.get(f"{pref_q}.responses.status") or ["submitted"] * len(values)
            for i, v in enumerate(values):
                if i < len(status) and status[i] != "submitted":
                    continue
                pref = _pref(v)
                if pref is None:
                    raise self.refuse(
                        path,
                        no,
                        f"{pref_q}.responses[{i}]",
                        f"is {v!r}",
                        "use labels A/B/tie/both bad or a ranking of response_a/response_b",
                    )
                user = users[i] if i < len(users) else None
                ratings, comment = {}, None
                for q in questions:
                    if q == pref_q:
                        continue
                    qv = rec.get(f"{q}.responses") or []
                    qu = rec.get(f"{q}.responses.users") or []
                    mine = next((x for x, u in zip(qv, qu, strict=False) if u == user), qv[i] if i < len(qv) else None)
                    if isinstance(mine, int | float) and not isinstance(mine, bool):
                        ratings[q] = mine
                    elif isinstance(mine, str) and choice_value(mine) is None:
                        comment = mine
                yield Record(
                    no,
                    "judgment",
                    {
                        "external_id": slug(f"argilla-{rid}-{pref_q}-{user or i}"),
                        "source": source,
                        "annotator": None if user is None else str(user),
                        "prompt": ext,
                        "a": refs["a"],
                        "b": refs["b"],
                        "preference": pref[0],
                        "tie": pref[1],
                        "both_bad": pref[2],
                        "comment": comment,
                        "details": {"question": pref_q, "value": v, **({"ratings": ratings} if ratings else {})},
                    },
                    f"{pref_q}.responses[{i}]",
                )
