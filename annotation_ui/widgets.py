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


@st.cache_data(max_entries=256, show_spinner=False)
def waveform_spec(wav: bytes, height: int = 70) -> dict[str, Any]:
    """A Vega-Lite spec of the clip's envelope, built once per clip (no altair/pandas on each rerun)."""
    t, lo, hi, dur = envelope(wav)
    fmt = ".2f" if dur < 2 else ".1f" if dur < 20 else ".0f"  # ticks must not repeat on short clips
    peak = max(1e-6, max(abs(x) for x in lo + hi))
    values = [{"t": round(a, 4), "lo": round(b / peak, 3), "hi": round(c / peak, 3)} for a, b, c in zip(t, lo, hi)]
    return {
        "data": {"values": values},
        "mark": {"type": "area", "color": "#4e79a7", "opacity": 0.85, "interpolate": "step-after"},
        "encoding": {
            "x": {
                "field": "t",
                "type": "quantitative",
                "axis": {"tickCount": 5, "grid": False, "title": None, "format": fmt},
            },
            "y": {"field": "lo", "type": "quantitative", "axis": None, "scale": {"domain": [-1.05, 1.05]}},
            "y2": {"field": "hi"},
        },
        "height": height,
    }


def waveform(wav: bytes, *, height: int = 70) -> None:
    """A small waveform picture, so a rater can see where a glitch or a silence is."""
    st.vega_lite_chart(waveform_spec(wav, height), width="stretch")


def duration_label(seconds: float | None) -> str:
    if not seconds:
        return ""
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)}:{int(seconds % 60):02d} min"
