"""The system message a persona card becomes. One definition: rollouts, snapshots and judges agree."""

from __future__ import annotations

from typing import Any


def persona_system_text(card: dict[str, Any]) -> str:
    """ "You are NAME, DESCRIPTION. STYLE" (the form the bundled offline policy was trained on)."""
    name = card.get("display_name") or card.get("name") or "the assistant"
    desc = str(card.get("description", "")).strip().rstrip(".")
    style = str(card.get("style") or card.get("speaking_style") or "").strip()
    text = f"You are {name}, {desc}." if desc else f"You are {name}."
    return f"{text} {style}".strip()
