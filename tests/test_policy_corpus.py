"""The bundled persona corpus and the prosody markup (no model needed)."""

from __future__ import annotations

import re
from collections import Counter

from pipelines.policy.offline.corpus import (
    build_corpus,
    load_dialogues,
    load_heldout,
    load_personas,
)
from pipelines.policy.offline.markup import (
    CHAT_TEMPLATE,
    PAUSE_MS,
    PITCH_VALUES,
    RATE_VALUES,
    parse_markup,
    prosody_summary,
    render_chat,
    strip_controls,
    system_message,
)


def test_committed_corpus_is_reproducible() -> None:
    train, heldout = build_corpus()
    assert load_dialogues() == train, "run `python -m pipelines.policy.offline.corpus` to regenerate the JSONL"
    assert load_heldout() == heldout


def test_corpus_shape_and_held_out_separation() -> None:
    personas, train, heldout = load_personas(), load_dialogues(), load_heldout()
    assert len(personas) >= 4
    for card in personas:
        assert {"name", "description", "speaking_style", "prosody"} <= set(card)
        assert card["prosody"]["pitch"] in PITCH_VALUES and card["prosody"]["rate"] in RATE_VALUES
    exchanges = sum(1 for d in train for m in d["messages"] if m["role"] == "assistant")
    assert exchanges >= 300
    assert any(sum(m["role"] == "user" for m in d["messages"]) >= 2 for d in train)  # multi-turn present
    train_prompts = {m["content"] for d in train for m in d["messages"] if m["role"] == "user"}
    assert len(heldout) >= 30
    assert not {h["messages"][-1]["content"] for h in heldout} & train_prompts


def test_assistant_turns_are_readable_sentences_with_persona_prosody() -> None:
    personas = {p["id"]: p for p in load_personas()}
    on_target: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for d in load_dialogues():
        for m in d["messages"]:
            if m["role"] != "assistant":
                continue
            assert m["content"] == strip_controls(m["markup"])
            assert re.fullmatch(r"[A-Z].*[.!?]", m["content"]), m["content"]
            if d["persona_id"] in personas:
                summary = prosody_summary(m["markup"])
                target = personas[d["persona_id"]]["prosody"]
                totals[d["persona_id"]] += 1
                on_target[d["persona_id"]] += (
                    summary["rate"][0] == target["rate"] and summary["pitch"][0] == target["pitch"]
                )
    for pid, n in totals.items():
        # Mostly on target (so the persona is learnable), not always (so preferences can move it).
        assert 0.35 < on_target[pid] / n < 0.75, (pid, on_target[pid] / n)


def test_parse_markup_segments() -> None:
    markup = (
        "<rate_slow><pitch_low> Ah, hello there.<pause> Keep it<emph> dark and cool.<pitch_high> Bye!<|end|>ignored"
    )
    segs = parse_markup(markup)
    assert [s.text for s in segs] == ["Ah, hello there.", "Keep it", "dark", "and cool.", "Bye!"]
    assert segs[0].rate == RATE_VALUES["slow"] and segs[0].pitch == PITCH_VALUES["low"]
    assert segs[0].pause_after_ms == PAUSE_MS and segs[1].pause_after_ms == 0
    assert segs[2].emphasis and not segs[3].emphasis
    assert segs[4].pitch == PITCH_VALUES["high"]
    assert strip_controls(markup.split("<|end|>")[0]) == "Ah, hello there. Keep it dark and cool. Bye!"
    # Repeated pauses lengthen the silence; a setting equal to the current one does not split.
    segs = parse_markup("<pitch_mid> One.<pause><pause><pitch_mid> Two.")
    assert [(s.text, s.pause_after_ms) for s in segs] == [("One.", 2 * PAUSE_MS), ("Two.", 0)]


def test_render_chat_matches_chat_template_and_sanitises_user_text() -> None:
    from jinja2 import Template

    card = load_personas()[0]
    conv = [
        system_message(card),
        {"role": "user", "content": "Hi <pause> there"},
        {"role": "assistant", "content": "Hello.", "markup": "<rate_slow><pitch_low> Hello."},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
    ]
    rendered = render_chat(conv)
    assert rendered.startswith("<|system|>You are Mara, a calm librarian")
    assert "Hi   there" in rendered and "<|assistant|><rate_slow><pitch_low> Hello.<|end|>" in rendered
    assert rendered.endswith("<|user|>And now?<|end|><|assistant|>")
    plain = [
        {"role": m["role"], "content": render_chat([m], False).split("|>", 1)[1].removesuffix("<|end|>")} for m in conv
    ]
    assert Template(CHAT_TEMPLATE).render(messages=plain, add_generation_prompt=True) == rendered
