"""The rating form per protocol: pairwise A/B, MOS, CMOS, MUSHRA and timeline, plus 1-5 dimension ratings.

(A timeline task's events are marked in ``annotation_ui.timeline`` above this form and sent with it.)

One ``st.form`` per task (widget keys carry the task id, so the next item starts blank and a
refused submit keeps what the rater entered). Choice questions start unanswered: a preselected
option would bias lazy raters toward it. The whole form is keyboard-operable: Tab between
questions, arrow keys within a radio group, Enter (or Ctrl+Enter in the rationale) submits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from annotation_ui.widgets import DIMENSION_HELP, DIMENSION_TITLE
from earmark.domain.limits import Limits
from earmark.services.tasks import RaterItem

CHOICE_LABELS = {"A": "A is better", "B": "B is better", "tie": "About the same", "both_bad": "Both are bad"}
STRENGTH_LABELS = {1: "Slightly", 2: "Clearly", 3: "Much"}
ACR_LABELS = {1: "1 · Bad", 2: "2 · Poor", 3: "3 · Fair", 4: "4 · Good", 5: "5 · Excellent"}
CMOS_LABELS = {
    -3: "A much better",
    -2: "A better",
    -1: "A slightly better",
    0: "About the same",
    1: "B slightly better",
    2: "B better",
    3: "B much better",
}
DIM_LABELS = {1: "1", 2: "2", 3: "3", 4: "4", 5: "5"}


@dataclass
class FormOutcome:
    submitted: bool = False
    answer: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def widget_key(name: str, task_id: int) -> str:
    return f"{name}-{task_id}"


def _protocol_questions(item: RaterItem) -> tuple[dict[str, Any], list[str]]:
    k = item.task_id
    labels = [s.label for s in item.stimuli]
    answer: dict[str, Any] = {}
    missing: list[str] = []
    if item.protocol == "pairwise":
        st.markdown("**Which response is better overall?**")
        choice = st.radio(
            "Which response is better overall?",
            list(CHOICE_LABELS),
            index=None,
            horizontal=True,
            format_func=CHOICE_LABELS.get,
            key=widget_key("choice", k),
            label_visibility="collapsed",
        )
        strength = st.select_slider(
            "How much better?",
            options=list(STRENGTH_LABELS),
            value=2,
            format_func=STRENGTH_LABELS.get,
            key=widget_key("strength", k),
            help="Only counts when you pick A or B.",
        )
        if choice is None:
            missing.append("which response is better")
        else:
            answer["choice"] = choice
            if choice in ("A", "B"):
                answer["strength"] = int(strength)
    elif item.protocol == "cmos":
        st.markdown("**Compare B with A**")
        answer["cmos"] = int(
            st.select_slider(
                "Compare B with A",
                options=list(CMOS_LABELS),
                value=0,
                format_func=CMOS_LABELS.get,
                key=widget_key("cmos", k),
                label_visibility="collapsed",
            )
        )
    elif item.protocol == "mos":
        st.markdown("**Overall quality** (ITU-T P.800 absolute category rating)")
        cols = st.columns(len(labels))
        scores = []
        for col, label in zip(cols, labels):
            with col:
                v = st.radio(
                    f"Clip {label}",
                    list(ACR_LABELS),
                    index=None,
                    format_func=ACR_LABELS.get,
                    key=widget_key(f"mos-{label}", k),
                )
            scores.append(v)
            if v is None:
                missing.append(f"the quality of clip {label}")
        answer["mos"] = scores
    elif item.protocol == "mushra":
        if item.reference is not None:  # BS.1534: graded against the open reference, 100 = indistinguishable
            st.markdown(
                "**Score every clip against the reference**: 100 = sounds exactly like the reference, "
                "0 = very much worse."
            )
        else:
            st.markdown("**Score every clip from 0 (bad) to 100 (excellent)**.")
        cols = st.columns(len(labels))
        answer["mushra"] = [
            int(col.slider(f"Clip {label}", 0, 100, 50, key=widget_key(f"mushra-{label}", k)))
            for col, label in zip(cols, labels)
        ]
    return answer, missing


def _dimension_questions(item: RaterItem) -> tuple[dict[str, int], list[str]]:
    dims = [d for d in item.dimensions if d in DIMENSION_TITLE]
    if not dims:
        return {}, []
    target = {
        "pairwise": "the response you preferred (for a tie or both bad: the pair as a whole)",
        "cmos": "the response you preferred (if equal: the pair as a whole)",
        "mushra": "the clip you scored highest",
        "timeline": "the assistant in this session",
    }.get(item.protocol, "the response")
    st.markdown(f"**Rate {target}** · 1 = poor, 5 = excellent")
    ratings: dict[str, int] = {}
    missing: list[str] = []
    for col, dim in zip(st.columns(len(dims)), dims):
        with col:
            v = st.radio(
                DIMENSION_TITLE[dim],
                list(DIM_LABELS),
                index=None,
                horizontal=True,
                help=DIMENSION_HELP[dim],
                key=widget_key(f"dim-{dim}", item.task_id),
            )
        if v is None:
            missing.append(f"{DIMENSION_TITLE[dim].lower()}")
        else:
            ratings[dim] = int(v)
    return ratings, missing


def rating_form(item: RaterItem, unplayed: list[str]) -> FormOutcome:
    """Render the form; on submit, the answer in presentation order plus anything left unanswered."""
    with st.form(widget_key("rate", item.task_id), border=True):
        answer, missing = _protocol_questions(item)
        ratings, missing_dims = _dimension_questions(item)
        answer["ratings"] = ratings
        answer["rationale"] = (
            st.text_area(
                "Why? (optional, one sentence is enough)",
                max_chars=Limits.MAX_RATIONALE_CHARS,
                height=80,
                placeholder="What made the difference: a mispronounced word, flat intonation, off-persona tone…",
                key=widget_key("rationale", item.task_id),
            )
            or ""
        )
        ready = not unplayed
        submitted = st.form_submit_button(
            "Submit", type="primary", disabled=not ready, shortcut="Ctrl+Enter", key=widget_key("submit", item.task_id)
        )
        if not ready:
            st.caption(
                "Play the whole session (or both tracks) to the end to enable Submit."
                if item.protocol == "timeline"
                else f"Play {' and '.join(f'clip {x}' for x in unplayed)} to the end to enable Submit."
            )
    return FormOutcome(bool(submitted), answer, missing + [f"a {d} rating" for d in missing_dims])
