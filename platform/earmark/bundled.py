"""Starter personas and prompts that ship with earmark (written for this project)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from earmark.api import Earmark

DATA_DIR = Path(__file__).parent / "data"


def seed_starter_data(em: "Earmark") -> str:
    """Import the bundled personas and prompts (idempotent); returns a one-line summary."""
    parts = []
    personas = DATA_DIR / "personas.jsonl"
    prompts = DATA_DIR / "prompts.jsonl"
    if personas.exists():
        rep = em.catalog.import_personas(personas)
        parts.append(f"{rep.added} personas added ({rep.skipped} present)")
    if prompts.exists():
        rep = em.catalog.import_prompts(prompts)
        parts.append(f"{rep.added} prompts added ({rep.skipped} present)")
    return ", ".join(parts) or "no bundled data found"
