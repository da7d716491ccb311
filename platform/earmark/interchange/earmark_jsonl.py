"""earmark JSONL: prompts, personas, responses and judgments, one object per line (records.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from earmark.interchange.base import Adapter, Record, Sample, iter_rows
from earmark.interchange.records import KINDS, infer_kind


class EarmarkJsonl(Adapter):
    name = "earmark"
    description = "earmark JSONL: prompt, persona, response and judgment lines (`earmark schema earmark`)"
    expected = (
        'one object per line: a prompt {"external_id","regime","messages",...}, persona {"name",...}, '
        'response {"prompt","policy","text",...} or judgment {"external_id","prompt","a","b","preference"}'
    )

    def detect(self, sample: Sample) -> bool:
        return (
            sample.path.suffix.lower() == ".jsonl"
            and bool(sample.rows)
            and all(isinstance(r, dict) and infer_kind(r) for r in sample.rows)
            and not any("chosen" in r or "conversation_a" in r for r in sample.rows)
        )

    def iter_records(self, path: Path) -> Iterator[Record]:
        for no, obj in iter_rows(path, self.name):
            if not isinstance(obj, dict):
                raise self.refuse(path, no, "(line)", "is not a JSON object", "write one object per line")
            kind = infer_kind(obj)
            if kind is None:
                raise self.refuse(
                    path,
                    no,
                    "kind",
                    f"is missing or unknown ({obj.get('kind')!r}) and cannot be read from the keys",
                    f'add "kind": one of {", ".join(KINDS)}',
                )
            if "kind" in obj:
                obj = {k: v for k, v in obj.items() if k != "kind"}
            yield Record(no, kind, obj)
