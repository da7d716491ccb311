"""The rating form per protocol: pairwise A/B, MOS, CMOS, MUSHRA and timeline, plus 1-5 dimension ratings.

(A timeline task's events are marked in ``annotation_ui.timeline`` above this form and sent with it.)

One ``st.form`` per task (widget keys carry the task id, so the next item starts blank and a
refused submit keeps what the rater entered). Every question starts unanswered (a preselected
option would bias lazy raters toward it), except MUSHRA's sliders, which have no empty state. The
answer is read from the widgets' session state (``collect``), so the Submit button's callback saves
it before the one rerun that shows the next item; a missing answer is reported next to its question.
Keyboard: one-key shortcuts (``annotation_ui.browser.hotkeys``), Tab and arrows, Ctrl+Enter submits.
"""

from __future__ import annotations

from collections.abc import Callable
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


def widget_key(name: str, task_id: int) -> str:
    return f"{name}-{task_id}"


def _v(name: str, task_id: int) -> Any:
    return st.session_state.get(widget_key(name, task_id))


def dimensions_of(item: RaterItem) -> list[str]:
    return [d for d in item.dimensions if d in DIMENSION_TITLE]


def collect(item: RaterItem) -> tuple[dict[str, Any], dict[str, str]]:
    """The answer as the widgets hold it now, in presentation order, and what is missing, keyed by
    the question it belongs to (``choice``, ``strength``, ``mos-A``, ``dim-prosody``...)."""
    k = item.task_id
    labels = [s.label for s in item.stimuli]
    answer: dict[str, Any] = {}
    missing: dict[str, str] = {}
    if item.protocol == "pairwise":
        choice = _v("choice", k)
        if choice is None:
            missing["choice"] = "Choose which response is better (or a tie, or both bad)."
        else:
            answer["choice"] = choice
            if choice in ("A", "B"):
                strength = _v("strength", k)
                if strength is None:
                    missing["strength"] = f"Say how much better {choice} is."
                else:
                    answer["strength"] = int(strength)
    elif item.protocol == "cmos":
        v = _v("cmos", k)
        if v is None:
            missing["cmos"] = "Compare B with A."
        else:
            answer["cmos"] = int(v)
    elif item.protocol == "mos":
        scores = []
        for label in labels:
            v = _v(f"mos-{label}", k)
            if v is None:
                missing[f"mos-{label}"] = f"Rate the quality of clip {label}."
            scores.append(v)
        answer["mos"] = scores
    elif item.protocol == "mushra":
        answer["mushra"] = [
            int(_v(f"mushra-{label}", k) if _v(f"mushra-{label}", k) is not None else 50) for label in labels
        ]
    ratings = {}
    for dim in dimensions_of(item):
        v = _v(f"dim-{dim}", k)
        if v is None:
            missing[f"dim-{dim}"] = f"Rate {DIMENSION_TITLE[dim].lower()} (1-5)."
        else:
            ratings[dim] = int(v)
    answer["ratings"] = ratings
    answer["rationale"] = _v("rationale", k) or ""
    return answer, missing


def _error(errors: dict[str, str], key: str) -> None:
    if key in errors:
        st.error(errors[key], icon=":material/error:")


def _protocol_questions(item: RaterItem, errors: dict[str, str]) -> None:
    k = item.task_id
    labels = [s.label for s in item.stimuli]
    if item.protocol == "pairwise":
        st.markdown("**Which response is better overall?** · keys A, B, T (about the same), X (both bad)")
        st.radio(
            "Which response is better overall?",
            list(CHOICE_LABELS),
            index=None,
            horizontal=True,
            format_func=CHOICE_LABELS.get,
            key=widget_key("choice", k),
            label_visibility="collapsed",
        )
        _error(errors, "choice")
        st.radio(
            "How much better? (only when you pick A or B) · keys S, C, M",
            list(STRENGTH_LABELS),
            index=None,
            horizontal=True,
            format_func=STRENGTH_LABELS.get,
            key=widget_key("strength", k),
        )
        _error(errors, "strength")
    elif item.protocol == "cmos":
        st.markdown("**Compare B with A**")
        st.radio(
            "Compare B with A",
            list(CMOS_LABELS),
            index=None,
            horizontal=True,
            format_func=CMOS_LABELS.get,
            key=widget_key("cmos", k),
            label_visibility="collapsed",
        )
        _error(errors, "cmos")
    elif item.protocol == "mos":
        st.markdown("**Overall quality** (ITU-T P.800 absolute category rating)")
        for col, label in zip(st.columns(len(labels)), labels):
            with col:
                st.radio(
                    f"Clip {label}",
                    list(ACR_LABELS),
                    index=None,
                    format_func=ACR_LABELS.get,
                    key=widget_key(f"mos-{label}", k),
                )
                _error(errors, f"mos-{label}")
    elif item.protocol == "mushra":
        if item.reference is not None:  # BS.1534: graded against the open reference, 100 = indistinguishable
            st.markdown(
                "**Score every clip against the reference**: 100 = sounds exactly like the reference, "
                "0 = very much worse."
            )
        else:
            st.markdown("**Score every clip from 0 (bad) to 100 (excellent)**.")
        for col, label in zip(st.columns(len(labels)), labels):
            col.slider(f"Clip {label}", 0, 100, 50, key=widget_key(f"mushra-{label}", k))


def _dimension_questions(item: RaterItem, errors: dict[str, str]) -> None:
    dims = dimensions_of(item)
    if not dims:
        return
    target = {
        "pairwise": "the response you preferred (for a tie or both bad: the pair as a whole)",
        "cmos": "the response you preferred (if equal: the pair as a whole)",
        "mushra": "the clip you scored highest",
        "timeline": "the assistant in this session",
    }.get(item.protocol, "the response")
    st.markdown(f"**Rate {target}** · 1 = poor, 5 = excellent · keys 1-5 fill the next unanswered one")
    for col, dim in zip(st.columns(len(dims)), dims):
        with col:
            st.radio(
                DIMENSION_TITLE[dim],
                list(DIM_LABELS),
                index=None,
                horizontal=True,
                help=DIMENSION_HELP[dim],
                key=widget_key(f"dim-{dim}", item.task_id),
            )
            _error(errors, f"dim-{dim}")


def rating_form(
    item: RaterItem, unplayed: list[str], errors: dict[str, str], on_submit: Callable[[], None], unplayed_note: str
) -> None:
    """Render the form; ``on_submit`` runs (as the button's callback, before the rerun) on Submit."""
    with st.form(widget_key("rate", item.task_id), border=True):
        _protocol_questions(item, errors)
        _dimension_questions(item, errors)
        st.text_area(
            "Why? (optional, one sentence is enough)",
            max_chars=Limits.MAX_RATIONALE_CHARS,
            height=80,
            placeholder="What made the difference: a mispronounced word, flat intonation, off-persona tone…",
            key=widget_key("rationale", item.task_id),
        )
        _error(errors, "submit")
        ready = not unplayed
        st.form_submit_button(
            "Submit",
            type="primary",
            disabled=not ready,
            shortcut="Ctrl+Enter",
            key=widget_key("submit", item.task_id),
            on_click=on_submit,
        )
        if not ready:
            st.caption(unplayed_note)
