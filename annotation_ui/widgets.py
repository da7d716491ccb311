"""Small display pieces shared by the rater and reviewer pages.

All text that came from users, prompts or models goes through ``md_escape`` (or ``st.text``):
Streamlit never renders raw HTML without ``unsafe_allow_html`` (which this app never passes), but
Markdown itself could still draw an image from an attacker's server or a misleading link.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Any

import numpy as np
import streamlit as st

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:&])")
DIMENSION_HELP = {
    "prosody": "Natural rhythm, stress, intonation and pacing of the speech.",
    "persona_consistency": "Sounds and behaves like the persona card: voice, manner, style.",
    "correctness": "The content is right and answers what the user asked.",
}
DIMENSION_TITLE = {"prosody": "Prosody", "persona_consistency": "Persona consistency", "correctness": "Correctness"}


# Bidirectional controls (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI, LRM, RLM, ALM) can reverse how
# text reads ("exe.txt" shown as "txt.exe"): shown as visible tags instead of being obeyed.
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
# GFM turns bare URLs, www. names and e-mail addresses into links: a word joiner (U+2060, invisible)
# after the scheme's colon, the "www" and the "@" breaks the pattern without changing what is read.
_AUTOLINK = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]{1,20}:(?=//)|\bwww(?=\.)|@(?=\w))")


def neutralize(text: Any) -> str:
    """User text made inert for display: bidi controls visible as ``[U+202E]``, no autolinks."""
    s = _BIDI.sub(lambda m: f"[U+{ord(m.group()):04X}]", str(text if text is not None else ""))
    return _AUTOLINK.sub(lambda m: m.group() + "\u2060", s)


def md_escape(text: Any) -> str:
    """Escape Markdown (and the HTML-ish characters) so user text renders literally, never as a link,
    with bidi controls neutralised; keep line breaks."""
    s = _MD_SPECIAL.sub(r"\\\1", neutralize(text))
    return s.replace("\r\n", "\n").replace("\n", "  \n")


def persona_card(card: dict[str, Any] | None) -> None:
    with st.container(border=True):
        st.markdown("**Persona**")
        if not card:
            st.caption("No persona for this prompt: judge the response on its own.")
            return
        if card.get("display_name"):
            st.markdown(f"##### {md_escape(card['display_name'])}")
        if card.get("description"):
            st.markdown(md_escape(card["description"]))
        if card.get("style"):
            st.caption(f"Speaking style: {md_escape(card['style'])}")


def conversation(turns: list[dict[str, Any]], audio_for) -> None:
    """The prompt as chat bubbles; a turn with audio gets a player (the user's recorded voice)."""
    with st.container(border=True):
        st.markdown("**Conversation so far**")
        if not turns:
            st.caption("(no prompt text)")
        for i, turn in enumerate(turns):
            role = "user" if turn.get("role") == "user" else "assistant"
            with st.chat_message(role):
                if turn.get("text"):
                    st.markdown(md_escape(turn["text"]))
                if turn.get("audio_sha256"):
                    data = audio_for(i)
                    if data:
                        st.audio(data, format="audio/wav")


@st.cache_data(max_entries=256, show_spinner=False)
def envelope(wav: bytes, bins: int = 240) -> tuple[list[float], list[float], list[float], float]:
    """Min/max envelope of a clip in ``bins`` time bins: (t, lo, hi, duration_s). Cached by content."""
    from earmark.audio import decode

    audio, sr = decode(wav)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    n = len(audio)
    if n == 0:
        return [0.0], [0.0], [0.0], 0.0
    bins = max(1, min(bins, n))
    edges = np.linspace(0, n, bins + 1).astype(int)
    lo = [float(audio[a:b].min()) if b > a else 0.0 for a, b in pairwise(edges)]
    hi = [float(audio[a:b].max()) if b > a else 0.0 for a, b in pairwise(edges)]
    t = [float(a / sr) for a in edges[:-1]]
    return t, lo, hi, n / sr


WAVE_COLOR = (78, 121, 167, 230)  # #4e79a7
AXIS_COLOR = (128, 128, 128, 255)  # readable on the light and the dark theme


def _tick_step(duration_s: float, max_ticks: int = 6) -> float:
    """A round tick spacing (1, 2 or 5 times a power of ten) giving at most ``max_ticks`` ticks."""
    raw = max(duration_s, 1e-3) / max_ticks
    base = 10 ** np.floor(np.log10(raw))
    return float(next(m * base for m in (1, 2, 5, 10) if m * base >= raw))


@st.cache_data(max_entries=256, show_spinner=False)
def waveform_png(wav: bytes, width: int = 600, height: int = 70) -> bytes:
    """The clip's min/max envelope as a small PNG with a time axis, drawn once per clip.

    A picture instead of a chart: it travels once per item as a media URL (a chart's spec was
    resent with every rerun, ~9 KB per clip), costs the browser no chart rendering when the next
    item appears, and takes no Tab stop."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    axis_h = 16
    plot_h = height - axis_h
    _, lo, hi, dur = envelope(wav)  # the 240 bins the page already computed for the duration
    peak = max(1e-6, max(abs(x) for x in lo + hi))
    img = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    mid = plot_h / 2
    n = len(lo)
    for i, (a, b) in enumerate(zip(lo, hi)):
        x0, x1 = i * width / n, (i + 1) * width / n
        y_top = mid - (b / peak) * (mid - 1)
        y_bot = mid - (a / peak) * (mid - 1)
        draw.rectangle((x0, y_top, max(x0, x1 - 1), max(y_top + 1, y_bot)), fill=WAVE_COLOR)
    draw.line((0, plot_h, width, plot_h), fill=AXIS_COLOR)
    if dur > 0:
        step = _tick_step(dur)
        fmt = "{:.2f}" if step < 0.1 else "{:.1f}" if step < 1 else "{:.0f}"
        font = ImageFont.load_default(size=11)
        k = 0
        while k * step <= dur + 1e-9:
            x = min(width - 1, k * step / dur * width)
            draw.line((x, plot_h, x, plot_h + 3), fill=AXIS_COLOR)
            label = fmt.format(k * step) + (" s" if k == 0 else "")
            w = draw.textlength(label, font=font)
            draw.text((min(max(0, x - w / 2), width - w), plot_h + 3), label, fill=AXIS_COLOR, font=font)
            k += 1
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def waveform(wav: bytes, *, height: int = 70) -> None:
    """A small waveform picture, so a rater can see where a glitch or a silence is."""
    st.image(waveform_png(wav, height=height), width="stretch", alt="Waveform of the clip")


def duration_label(seconds: float | None) -> str:
    if not seconds:
        return ""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}:{int(seconds % 60):02d} min"
