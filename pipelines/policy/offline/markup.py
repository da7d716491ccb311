"""The offline policy's text format: chat role tokens, prosody-control tokens and their meaning.

An assistant turn is plain English interleaved with control tokens, for example::

    <rate_slow><pitch_low> Ah, that is a lovely question.<pause> Keep your bedroom<emph> dark and cool.

Rate and pitch tokens set the voice until the next change, ``<pause>`` inserts a silence, and
``<emph>`` stresses the next word. Control tokens attach to the preceding text and the text that
follows starts with a space, so the byte-level tokenizer always sees words in one form.
"""

from __future__ import annotations

import re
from typing import Any

from earmark.domain.messages import content_text
from earmark.domain.persona_text import persona_system_message, persona_system_text
from pipelines.speech.espeak import Segment

SYSTEM, USER, ASSISTANT, END, PAD = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_TOKENS = [PAD, END, SYSTEM, USER, ASSISTANT]

PITCH_TOKENS = {"<pitch_low>": "low", "<pitch_mid>": "mid", "<pitch_high>": "high"}
RATE_TOKENS = {"<rate_slow>": "slow", "<rate_mid>": "mid", "<rate_fast>": "fast"}
EMPH, PAUSE = "<emph>", "<pause>"
CONTROL_TOKENS = [*PITCH_TOKENS, *RATE_TOKENS, EMPH, PAUSE]
SPECIAL_TOKENS = CHAT_TOKENS + CONTROL_TOKENS

LEVELS = ("low", "mid", "high")
RATE_LEVELS = ("slow", "mid", "fast")
# eSpeak settings per level: pitch 0-100 (about 80/100/135 Hz mean F0 for en-us), rate in
# words/min; far enough apart that acoustic scorers and raters can hear the difference.
PITCH_VALUES = {"low": 28, "mid": 50, "high": 74}
RATE_VALUES = {"slow": 135, "mid": 170, "fast": 215}
PAUSE_MS = 400

# Jinja equivalent of ``render_chat`` so generic loaders (AutoTokenizer.apply_chat_template,
# HFCausalLMPolicy, TRL) format prompts exactly as the model was trained.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>' + message['content'] + '<|end|>' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>' + message['content'] + '<|end|>' }}"
    "{% else %}{{ '<|user|>' + message['content'] + '<|end|>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

_CONTROL_RE = re.compile("(" + "|".join(re.escape(t) for t in CONTROL_TOKENS) + ")")
_ANY_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_WS_RE = re.compile(r"\s+")


def system_message(card: dict[str, Any]) -> dict[str, Any]:
    """A system message carrying a persona card (the card stays attached for other adapters)."""
    return {**persona_system_message(card), "persona": card}


def message_text(message: dict[str, Any]) -> str:
    """Text of one message as the offline policy reads it (``earmark.domain.messages.content_text``); a
    system message with only a ``persona`` card gets the card line; control tokens are stripped."""
    text = content_text(message.get("content"))
    if not text and message.get("role") == "system" and isinstance(message.get("persona"), dict):
        text = persona_system_text(message["persona"])
    # User text must not smuggle in control tokens the model treats as structure.
    return _ANY_SPECIAL_RE.sub(" ", text).strip() if message.get("role") != "assistant" else text.strip()


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """Prompt string for ``messages``; same output as ``CHAT_TEMPLATE``."""
    out: list[str] = []
    for m in messages:
        role = m.get("role")
        text = m.get("markup") if role == "assistant" and m.get("markup") else message_text(m)
        tok = ROLE_TOKENS.get(str(role), USER)  # tool/other roles read as user input
        out.append(f"{tok}{text}{END}")
    if add_generation_prompt:
        out.append(ASSISTANT)
    return "".join(out)


def strip_controls(markup: str) -> str:
    """Plain transcript: drop every special token and normalise whitespace."""
    return _WS_RE.sub(" ", _ANY_SPECIAL_RE.sub(" ", markup)).strip()


def parse_markup(markup: str, pitch: str = "mid", rate: str = "mid") -> list[Segment]:
    """Turn marked-up text into eSpeak segments (rate/pitch per stretch, emphasis, pauses)."""
    segments: list[Segment] = []
    buf: list[str] = []
    emph_next = False

    def flush(pause_ms: int = 0) -> None:
        text = _WS_RE.sub(" ", "".join(buf)).strip()
        buf.clear()
        if text:
            segments.append(Segment(text, RATE_VALUES[rate], PITCH_VALUES[pitch], False, pause_ms))
        elif pause_ms:
            if segments:  # a pause right after a segment lengthens its trailing silence
                last = segments[-1]
                segments[-1] = Segment(last.text, last.rate, last.pitch, last.emphasis, last.pause_after_ms + pause_ms)
            else:
                segments.append(Segment("", RATE_VALUES[rate], PITCH_VALUES[pitch], False, pause_ms))

    # Role tokens inside an assistant turn mean the model ran past its end: cut there.
    markup = re.split(r"<\|(?:end|user|system|assistant|pad)\|>", markup, maxsplit=1)[0]
    for piece in _CONTROL_RE.split(markup):
        if not piece:
            continue
        if piece in PITCH_TOKENS:
            if PITCH_TOKENS[piece] != pitch:
                flush()
                pitch = PITCH_TOKENS[piece]
        elif piece in RATE_TOKENS:
            if RATE_TOKENS[piece] != rate:
                flush()
                rate = RATE_TOKENS[piece]
        elif piece == PAUSE:
            flush(PAUSE_MS)
        elif piece == EMPH:
            emph_next = True
        else:
            if emph_next:
                m = re.match(r"(\s*)(\S+)(.*)", piece, re.DOTALL)
                if m:
                    flush()
                    segments.append(Segment(m.group(2), RATE_VALUES[rate], PITCH_VALUES[pitch], True, 0))
                    piece = m.group(3)
                    emph_next = False
            buf.append(piece)
    flush()
    return segments


def prosody_summary(markup: str) -> dict[str, Any]:
    """Counts a scorer or dashboard can use without re-parsing: levels used, pauses, emphases."""
    return {
        "pitch": [PITCH_TOKENS[t] for t in re.findall("|".join(map(re.escape, PITCH_TOKENS)), markup)],
        "rate": [RATE_TOKENS[t] for t in re.findall("|".join(map(re.escape, RATE_TOKENS)), markup)],
        "pauses": markup.count(PAUSE),
        "emphases": markup.count(EMPH),
    }
