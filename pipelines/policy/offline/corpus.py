"""The bundled persona-dialogue corpus: hand-written content, composed into marked-up dialogues.

``pipelines/data/personas.json`` (persona cards with prosody targets and stock phrases) and
``pipelines/data/topics.json`` (questions with a full and a terse answer) are written by hand.
``build_corpus`` composes them into dialogues with a seeded RNG, so the JSONL files are
reproducible: ``python -m pipelines.policy.offline.corpus`` rewrites them, and a test checks that
the committed files match. Prosody follows the persona most of the time and deviates on purpose
otherwise, so sampled responses differ in prosody and preference training has something to move.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from earmark.domain.persona_text import persona_system_message
from pipelines.policy.offline.markup import (
    EMPH,
    LEVELS,
    PAUSE,
    RATE_LEVELS,
    strip_controls,
)

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
PERSONAS_FILE = DATA_DIR / "personas.json"
TOPICS_FILE = DATA_DIR / "topics.json"
DIALOGUES_FILE = DATA_DIR / "persona_dialogues.jsonl"
HELDOUT_FILE = DATA_DIR / "heldout_prompts.jsonl"
CORPUS_SEED = 20240611
ON_TARGET_PROB = 0.7  # share of responses whose rate/pitch match the persona card
SHIFT_PROB = 0.15  # share with a pitch change before the closing line

# Persona-less requests (no system message) get a neutral voice and no stock phrases.
NEUTRAL = {"id": "neutral", "prosody": {"pitch": "mid", "rate": "mid", "pause_rate": 0.3, "emphasis_rate": 0.3}}
THANKS = [
    "Thank you!",
    "Thanks, that helps.",
    "Great, thanks.",
    "Thank you so much.",
    "Thanks a lot!",
    "That was useful, thank you.",
]
BRIEFLY = ["Can you say that more briefly?", "What is the main point?", "Give me the short version."]
# Greetings in front of some prompts, so the model keys on the question rather than its first words.
PREFIXES = ["Hi {name}! ", "Quick question. ", "Hello. ", "Hey {name}, "]
PREFIX_PROB = 0.25
HELDOUT_THANKS = "Thanks a lot, that was useful."
NEW_TOPIC_PROMPTS = [
    "What is your favorite season?",
    "How do I clean my kitchen quickly?",
    "Can you tell me a fun fact about whales?",
    "How do I teach my dog to sit?",
    "What should I do on a rainy day?",
    "How do I change a light bulb safely?",
    "What makes a good friend?",
    "How do I stay warm in winter?",
    "Why is the sky blue?",
    "How do I write a thank you note?",
    "What is a good way to relax after work?",
    "How can I be more patient?",
]


def load_personas() -> list[dict[str, Any]]:
    return json.loads(PERSONAS_FILE.read_text())


def load_topics() -> list[dict[str, Any]]:
    return json.loads(TOPICS_FILE.read_text())


def persona_by_id(persona_id: str) -> dict[str, Any]:
    for card in load_personas():
        if card["id"] == persona_id:
            return card
    raise KeyError(f"no bundled persona {persona_id!r}; known: {[p['id'] for p in load_personas()]}")


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?:])\s+", text.strip()) if s]


def _sentence_markup(sentence: str, emphasise: bool) -> str:
    """ " *word*" becomes "<emph> word" (stressed) or " word"; always returns a leading space."""
    return re.sub(r" \*(\S+?)\*", (EMPH + r" \1") if emphasise else r" \1", " " + sentence)


def _level(rng: random.Random, target: str, levels: tuple[str, ...]) -> str:
    if rng.random() < ON_TARGET_PROB:
        return target
    return rng.choice([lv for lv in levels if lv != target])


def compose(rng: random.Random, card: dict[str, Any], body: list[str], opener: str | None, closer: str | None) -> str:
    """Marked-up assistant turn: rate and pitch tokens, sentences, pauses, emphasis."""
    pros = card["prosody"]
    rate, pitch = _level(rng, pros["rate"], RATE_LEVELS), _level(rng, pros["pitch"], LEVELS)
    lines = ([opener] if opener else []) + body + ([closer] if closer else [])
    out = [f"<rate_{rate}><pitch_{pitch}>"]
    for i, line in enumerate(lines):
        if closer and i == len(lines) - 1 and rng.random() < SHIFT_PROB:
            out.append(f"<pitch_{rng.choice([lv for lv in LEVELS if lv != pitch])}>")
        out.append(_sentence_markup(line, rng.random() < pros["emphasis_rate"]))
        if i < len(lines) - 1 and rng.random() < pros["pause_rate"]:
            out.append(PAUSE)
    return "".join(out)


def _body(card: dict[str, Any], topic: dict[str, Any], key: str = "answer") -> list[str]:
    if card["id"] == "captain" and key == "answer":
        return _sentences(topic["terse"])
    sents = _sentences(topic[key] if key != "follow_up" else topic["follow_up"]["answer"])
    if card["id"] == "tutor" and key == "answer" and len(sents) > 1:
        # The tutor walks through the answer: "First, keep ...", "Next, put ...", "Finally, ...".
        steps = ["First,"] + ["Next,"] * (len(sents) - 2) + ["Finally," if len(sents) > 2 else "Then,"]
        sents = [s if s.startswith(("Yes", "I ")) else f"{w} {s[0].lower()}{s[1:]}" for w, s in zip(steps, sents)]
    return sents


def _assistant(rng: random.Random, card: dict[str, Any], body: list[str], full: bool) -> dict[str, Any]:
    stock = card.get("openers") and card["id"] != "neutral"
    opener = rng.choice(card["openers"]) if stock and full and rng.random() < 0.85 else None
    closer = rng.choice(card["closers"]) if stock and rng.random() < (0.7 if full else 0.3) else None
    markup = compose(rng, card, body, opener, closer)
    return {"role": "assistant", "content": strip_controls(markup), "markup": markup}


def _system(card: dict[str, Any]) -> list[dict[str, Any]]:
    return [] if card["id"] == "neutral" else [persona_system_message(card)]


def build_corpus(seed: int = CORPUS_SEED) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return (training dialogues, held-out prompts); deterministic for a seed."""
    rng = random.Random(seed)
    personas, topics = load_personas(), load_topics()
    train: list[dict[str, Any]] = []

    def add(card: dict[str, Any], topic_id: str, kind: str, messages: list[dict[str, Any]]) -> None:
        train.append(
            {
                "id": f"{card['id']}-{topic_id}-{kind}-{len(train)}",
                "persona_id": card["id"],
                "topic": topic_id,
                "kind": kind,
                "messages": _system(card) + messages,
            }
        )

    for t_i, topic in enumerate(topics):
        for p_i, card in enumerate(personas):
            prompt = topic["prompts"][(t_i + p_i) % 2]
            if rng.random() < PREFIX_PROB:
                prompt = rng.choice(PREFIXES).format(name=card["name"]) + prompt
            add(
                card,
                topic["id"],
                "single",
                [{"role": "user", "content": prompt}, _assistant(rng, card, _body(card, topic), True)],
            )
            if "follow_up" in topic:
                other = topic["prompts"][(t_i + p_i + 1) % 2]
                add(
                    card,
                    topic["id"],
                    "follow_up",
                    [
                        {"role": "user", "content": other},
                        _assistant(rng, card, _body(card, topic), True),
                        {"role": "user", "content": topic["follow_up"]["question"]},
                        _assistant(rng, card, _body(card, topic, "follow_up"), False),
                    ],
                )
        add(
            NEUTRAL,
            topic["id"],
            "single",
            [{"role": "user", "content": topic["prompts"][1]}, _assistant(rng, NEUTRAL, _body(NEUTRAL, topic), False)],
        )
    # Generic follow-ups that need the history: thanks, and a request to repeat the gist.
    for p_i, card in enumerate(personas):
        for j in range(8):
            topic = topics[(7 * p_i + 5 * j + 3) % len(topics)]
            first = [
                {"role": "user", "content": topic["prompts"][j % 2]},
                _assistant(rng, card, _body(card, topic), True),
            ]
            if j % 2 == 0:
                farewell = rng.choice(card["farewells"])
                markup_turn = _assistant(rng, {**card, "openers": []}, [farewell], False)
                add(
                    card,
                    topic["id"],
                    "thanks",
                    first + [{"role": "user", "content": THANKS[(p_i + j // 2) % len(THANKS)]}, markup_turn],
                )
            else:
                gist = _body(card, topic)[0]
                if card["id"] == "tutor":
                    gist = _sentences(topic["answer"])[0]
                turn = _assistant(rng, {**card, "openers": []}, [card["brief_intro"], gist], False)
                add(
                    card,
                    topic["id"],
                    "briefly",
                    first + [{"role": "user", "content": BRIEFLY[(p_i + j // 2) % len(BRIEFLY)]}, turn],
                )

    heldout: list[dict[str, Any]] = []
    for t_i, topic in enumerate(topics):
        card = personas[t_i % len(personas)]
        heldout.append(
            {
                "id": f"heldout-{topic['id']}",
                "persona_id": card["id"],
                "topic": topic["id"],
                "kind": "paraphrase",
                "messages": _system(card) + [{"role": "user", "content": topic["heldout"]}],
            }
        )
    for n_i, prompt in enumerate(NEW_TOPIC_PROMPTS):
        card = personas[(n_i + 3) % len(personas)]
        heldout.append(
            {
                "id": f"heldout-new-{n_i}",
                "persona_id": card["id"],
                "topic": None,
                "kind": "new_topic",
                "messages": _system(card) + [{"role": "user", "content": prompt}],
            }
        )
    for p_i, card in enumerate(personas):
        topic = topics[(11 * p_i + 2) % len(topics)]
        first = [{"role": "user", "content": topic["heldout"]}, _assistant(rng, card, _body(card, topic), True)]
        heldout.append(
            {
                "id": f"heldout-multi-{card['id']}",
                "persona_id": card["id"],
                "topic": topic["id"],
                "kind": "multi_turn",
                "messages": _system(card) + first + [{"role": "user", "content": HELDOUT_THANKS}],
            }
        )

    seen = {m["content"] for d in train for m in d["messages"] if m["role"] == "user"}
    leaked = [h["id"] for h in heldout if h["messages"][-1]["content"] in seen]
    if leaked:
        raise ValueError(f"held-out prompts also appear in training: {leaked}; reword them in topics.json")
    return train, heldout


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_corpus() -> tuple[int, int]:
    train, heldout = build_corpus()
    _write_jsonl(DIALOGUES_FILE, train)
    _write_jsonl(HELDOUT_FILE, heldout)
    return len(train), len(heldout)


def load_dialogues(path: Path | None = None) -> list[dict[str, Any]]:
    """Training dialogues (persona system message, user turns, marked-up assistant turns)."""
    return _read_jsonl(path or DIALOGUES_FILE)


def load_heldout(path: Path | None = None) -> list[dict[str, Any]]:
    """Held-out evaluation prompts: paraphrases, new topics and multi-turn, none seen in training."""
    return _read_jsonl(path or HELDOUT_FILE)


if __name__ == "__main__":
    n_train, n_heldout = write_corpus()
    print(f"wrote {n_train} dialogues to {DIALOGUES_FILE} and {n_heldout} held-out prompts to {HELDOUT_FILE}")
