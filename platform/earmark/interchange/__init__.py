"""Interchange: import the data users already have (one adapter per format), export with audio.

``ADAPTERS`` is the registry; ``detect(path)`` picks the adapter whose ``detect`` accepts the first
rows of the file, in this order (the most specific shapes first).
"""

from __future__ import annotations

from pathlib import Path

from earmark.errors import InvalidInput
from earmark.interchange.arena import ArenaBattles
from earmark.interchange.argilla import Argilla
from earmark.interchange.base import Adapter, Record, Sample, first_rows
from earmark.interchange.earmark_jsonl import EarmarkJsonl
from earmark.interchange.hf_preference import HFPreference
from earmark.interchange.label_studio import LabelStudio
from earmark.interchange.openai_chat import OpenAIChat

ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (ArenaBattles(), LabelStudio(), Argilla(), HFPreference(), EarmarkJsonl(), OpenAIChat())
}
SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow")

__all__ = ["ADAPTERS", "Adapter", "Record", "adapter_for", "detect"]


def detect(path: Path) -> Adapter:
    rows = first_rows(path)
    sample = Sample(path, rows)
    for a in ADAPTERS.values():
        if a.detect(sample):
            return a
    keys = sorted(rows[0])[:12] if rows and isinstance(rows[0], dict) else type(rows[0]).__name__ if rows else "none"
    raise InvalidInput(
        f"{path}: the format could not be detected (first record's keys: {keys}); known formats: "
        + "; ".join(f"{a.name} = {a.description}" for a in ADAPTERS.values())
        + ". Name one with --format, or see `earmark schema` for the earmark JSONL format"
    )


def adapter_for(path: Path, fmt: str | None) -> Adapter:
    if path.suffix.lower() not in SUFFIXES:
        raise InvalidInput(f"{path}: use a {', '.join(SUFFIXES)} file (got {path.suffix or 'no suffix'})")
    if fmt is None:
        return detect(path)
    if fmt not in ADAPTERS:
        raise InvalidInput(f"format {fmt!r} is unknown; use one of {', '.join(ADAPTERS)}")
    return ADAPTERS[fmt]
