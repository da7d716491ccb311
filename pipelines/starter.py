"""The bundled starter set: personas and prompts written for this project, user audio by eSpeak NG.

Personas come from the offline policy's corpus (``pipelines/data/personas.json``); their prosody
levels become numeric targets in the persona card (the acoustic scorer compares audio against them).
Train prompts are the first user turn of one dialogue per (persona, topic); multi-turn prompts keep
two user turns for the policy to answer in sequence; held-out prompts are paraphrases and new topics
the policy never saw. Every user turn is spoken by eSpeak NG and imported as real audio.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from earmark.api import Earmark

DATA = Path(__file__).parent / "data"
USER_VOICE: dict[str, Any] = {"rate": 165, "pitch": 62}

# Measured means of eSpeak NG en-us at the policy's pitch/rate settings (markup.PITCH_VALUES and
# RATE_VALUES): targets sit where a persona-consistent rendering lands.
F0_TARGET_HZ = {"low": 85.0, "mid": 102.0, "high": 128.0}
RATE_TARGET_WPS = {"slow": 2.3, "mid": 2.8, "fast": 3.5}


def persona_records() -> list[dict[str, Any]]:
    out = []
    for p in json.loads((DATA / "personas.json").read_text()):
        pros = p.get("prosody", {})
        out.append(
            {
                "name": p["id"],
                "display_name": p["name"],
                "description": p["description"],
                "style": p.get("speaking_style", ""),
                "prosody": {
                    "f0_mean_hz": F0_TARGET_HZ[pros.get("pitch", "mid")],
                    "rate_wps": RATE_TARGET_WPS[pros.get("rate", "mid")],
                    "pause_ratio": round(0.08 + 0.22 * float(pros.get("pause_rate", 0.3)), 3),
                },
                "voice": {"pitch": pros.get("pitch", "mid"), "rate": pros.get("rate", "mid")},
            }
        )
    return out


def _user_turn(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def speak_user_turns(record: dict[str, Any]) -> dict[str, Any]:
    """Replace each plain-text user turn with eSpeak NG audio (the text kept as its transcript)."""
    from pipelines.speech.espeak import render_text, wav_bytes

    messages = []
    for m in record["messages"]:
        if m["role"] == "user" and isinstance(m["content"], str):
            audio, sr = render_text(m["content"], **USER_VOICE)
            m = {
                "role": "user",
                "content": [
                    {
                        "type": "audio",
                        "transcript": m["content"],
                        "base64": base64.b64encode(wav_bytes(audio, sr)).decode(),
                    }
                ],
            }
        messages.append(m)
    return {**record, "messages": messages}


def _strip_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # The persona card becomes the system message at rollout time; prompts carry only the dialogue.
    return [m for m in messages if m["role"] != "system"]


def prompt_records(max_train_per_persona: int | None = None) -> list[dict[str, Any]]:
    personas = {p["id"] for p in json.loads((DATA / "personas.json").read_text())}
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    per_persona: dict[str, int] = {}
    dialogues = [json.loads(line) for line in (DATA / "persona_dialogues.jsonl").read_text().splitlines() if line]
    for d in dialogues:
        persona, key = d["persona_id"], (d["persona_id"], d["topic"])
        if persona not in personas or key in seen:
            continue
        msgs = _strip_system(d["messages"])
        if d["kind"] == "single":
            if max_train_per_persona and per_persona.get(persona, 0) >= max_train_per_persona:
                continue
            seen.add(key)
            per_persona[persona] = per_persona.get(persona, 0) + 1
            out.append(
                {
                    "external_id": f"train-{persona}-{d['topic']}",
                    "regime": "realtime",
                    "persona": persona,
                    "split": "train",
                    "tags": ["starter", d["topic"]],
                    "messages": [_user_turn(msgs[0]["content"])],
                }
            )
        elif d["kind"] == "follow_up" and not any(o["external_id"] == f"multi-{persona}" for o in out):
            users = [m["content"] for m in msgs if m["role"] == "user"][:2]
            out.append(
                {
                    "external_id": f"multi-{persona}",
                    "regime": "realtime",
                    "persona": persona,
                    "split": "train",
                    "tags": ["starter", "multi_turn", d["topic"]],
                    "messages": [_user_turn(u) for u in users],
                }
            )
    for h in (json.loads(line) for line in (DATA / "heldout_prompts.jsonl").read_text().splitlines() if line):
        msgs = _strip_system(h["messages"])
        turns = [
            _user_turn(m["content"]) if m["role"] == "user" else {"role": m["role"], "content": m["content"]}
            for m in msgs
        ]
        out.append(
            {
                "external_id": h["id"],
                "regime": "realtime",
                "persona": h["persona_id"],
                "split": "heldout",
                "tags": ["starter", *(str(t) for t in (h["kind"], h.get("topic")) if t)],
                "messages": turns,
            }
        )
    return out


def seed(em: Earmark, *, max_train_per_persona: int | None = 12) -> str:
    """Import the starter personas and prompts (idempotent)."""
    p = em.catalog.import_personas(persona_records(), source="starter personas")
    existing = {x.external_id for x in em.catalog.prompts()}
    records = [speak_user_turns(r) for r in prompt_records(max_train_per_persona) if r["external_id"] not in existing]
    added = em.catalog.import_prompts(records, source="starter prompts").added if records else 0
    return f"{p.added} personas and {added} prompts added"
