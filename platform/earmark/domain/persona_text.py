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


def persona_system_message(card: dict[str, Any]) -> dict[str, Any]:
    """The system message a persona card becomes."""
    return {"role": "system", "content": persona_system_text(card)}


def with_persona(messages: list[dict[str, Any]], card: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A copy of ``messages`` with the card's system message first, unless a system message leads."""
    out = [dict(m) for m in messages]
    if card and not (out and out[0].get("role") == "system"):
        out.insert(0, persona_system_message(card))
    return out
