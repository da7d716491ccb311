"""The adapter interface: ``detect(sample) -> bool`` and ``iter_records(path) -> Record``s.

An adapter translates one outside format into earmark interchange records (records.py); it does no
I/O beyond reading its file and writes nothing. Validation, audio, conflicts and the database are
the import service's (services/interchange.py), so every format is checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from earmark.errors import InvalidInput
from earmark.interchange.safety import iter_lines, load_json_document, loads_line, refuse_bad_values

TABULAR_SUFFIXES = (".parquet", ".arrow")


@dataclass
class Record:
    line: int  # 1-based line (JSONL) or row (tables, JSON arrays) in the source
    kind: str  # prompt | persona | response | judgment
    data: dict[str, Any]
    field_prefix: str = ""  # where the record came from inside the source row (for errors)


@dataclass
class Sample:
    """What detection looks at: the path and the first row(s) of the file."""

    path: Path
    rows: list[Any] = field(default_factory=list)


class Adapter:
    name: ClassVar[str]
    description: ClassVar[str]
    expected: ClassVar[str]  # one line: the shape this adapter expects (shown in errors)

    def detect(self, sample: Sample) -> bool:
        raise NotImplementedError

    def iter_records(self, path: Path) -> Iterator[Record]:
        raise NotImplementedError

    def where(self, path: Path, line: int) -> str:
        return f"{path}:{line}"

    def refuse(self, path: Path, line: int, fieldname: str, problem: str, fix: str) -> InvalidInput:
        return InvalidInput(
            f"{self.where(path, line)}: field {fieldname} {problem}; the {self.name} format expects "
            f"{self.expected}: {fix}"
        )


def iter_rows(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    """(line or row number, object) from .jsonl/.json/.parquet/.arrow, streamed where the format allows."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                refuse_bad_values(row, f"{path}:row {n}", fmt)
                yield n, row
        return
    if suffix == ".arrow":
        import pyarrow as pa

        try:
            reader = pa.ipc.open_stream(path)
            batches = iter(reader)
        except pa.ArrowInvalid:
            f = pa.ipc.open_file(path)
            batches = (f.get_batch(i) for i in range(f.num_record_batches))
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                refuse_bad_values(row, f"{path}:row {n}", fmt)
                yield n, row
        return
    if suffix == ".json":
        doc = load_json_document(path, fmt)
        items = (
            doc if isinstance(doc, list) else doc.get("records") or doc.get("data") if isinstance(doc, dict) else None
        )
        if not isinstance(items, list):
            raise InvalidInput(f"{path}: a {fmt} JSON file must be an array of objects; export it as a list")
        yield from enumerate(items, 1)
        return
    for no, text in iter_lines(path, fmt):
        yield no, loads_line(text, f"{path}:{no}", fmt)


def first_rows(path: Path, n: int = 3) -> list[Any]:
    out = []
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = load_json_document(path, "JSON")
        items = doc if isinstance(doc, list) else (doc.get("records") if isinstance(doc, dict) else None) or []
        return list(items[:n]) if isinstance(items, list) else []
    for _, row in iter_rows(path, "input"):
        out.append(row)
        if len(out) >= n:
            break
    return out


def slug(text: str) -> str:
    """A string made safe for an earmark name/external_id (NAME_PATTERN), at most 120 chars."""
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-.") or "x"
    if not s[0].isalnum():
        s = "x" + s
    return s[:120]


def user_content(text: Any, audio: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A prompt's message parts: its text (when any) then its audio (when any)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": str(text)}] if text else []
    if audio is not None:
        content.append(audio)
    return content


def short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def text_of(content: Any) -> str:
    """Plain text of an OpenAI/HF message content (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)
