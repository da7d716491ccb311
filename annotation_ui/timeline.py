"""Timeline annotation of a duplex session: both tracks on one time axis, players, marked events.

The picture puts the user (top) and the assistant (bottom) on one clock: each track's waveform
over its speech spans, the chunk grid (160 ms by default), the assistant's action channel (turn
labels, tool calls) as markers below, and the rater's own marks as red lines, so a rater can
see where an interruption or a late answer happened before typing its time.

Marked events live in ``st.session_state`` per task until the rating form is submitted; the
"Add event" form validates the onset against the session's length in a callback (the only place
Streamlit lets a page clear a form's fields after using them). Nothing here talks to the store:
the page passes in the ``TimelineView`` and audio it got from ``TaskService``/``ReviewService``.
"""

from __future__ import annotations

import uuid
from typing import Any

import streamlit as st

from annotation_ui import listen, widgets
from earmark.domain.annotation import TIMELINE_EVENTS
from earmark.services.annotation_timeline import TimelineView, onset_problem

EVENT_LABELS = {
    "bad_interruption": "Bad interruption (the assistant cut in)",
    "missed_backchannel": "Missed backchannel",
    "late_response": "Late response",
    "wrong_tool_call": "Wrong tool call",
    "other": "Other problem",
}
assert set(EVENT_LABELS) == set(TIMELINE_EVENTS)  # a new kind needs a label raters understand
MIX, TRACK_LABELS = "mix", {"user": "User", "assistant": "Assistant"}
COLORS = {"user": "#4e79a7", "assistant": "#f28e2b", "mark": "#d62728", "action": "#59a14f"}
_CENTER = {"user": 1.0, "assistant": 0.0}
_ACTION_Y = -1.0
MAX_GRID_LINES = 300  # beyond this a line per chunk is a grey smear: draw one per second instead


def events_key(task_id: int) -> str:
    return f"tl-events-{task_id}"


def field_key(name: str, task_id: int) -> str:
    return f"tl-{name}-{task_id}"


def marked(task_id: int) -> list[dict[str, Any]]:
    """The events this rater marked on the task so far, by onset."""
    return st.session_state.setdefault(events_key(task_id), [])


def parse_onset(text: str, duration_s: float) -> tuple[float | None, str | None]:
    """Seconds from ``2.4``, ``2,4``, ``2.4 s`` or ``m:ss`` (``0:02.4``); or why the text is refused."""
    raw = (text or "").strip().replace(",", ".")
    raw = raw[:-1].strip() if raw.endswith("s") else raw
    if not raw:
        return None, "enter the onset time in seconds (e.g. 2.4) or as m:ss (e.g. 0:02.4)"
    negative = raw.startswith("-")
    body = raw.lstrip("+-")
    try:
        if ":" in body:
            minutes, seconds = body.split(":", 1)
            value = int(minutes) * 60 + float(seconds)
        else:
            value = float(body)
    except ValueError:
        return None, f"{text.strip()!r} is not a time; enter seconds such as 2.4, or m:ss such as 0:02.4"
    value = -value if negative else value
    problem = onset_problem(value, duration_s)
    return (None, problem) if problem else (value, None)


def _add(task_id: int, duration_s: float) -> None:
    state = st.session_state
    kind = state.get(field_key("kind", task_id))
    onset, problem = parse_onset(state.get(field_key("onset", task_id), ""), duration_s)
    if kind is None:
        problem = "pick what went wrong (the kind of event)"
    if problem:
        state[field_key("error", task_id)] = f"The event was not added: {problem}."
        return
    events = marked(task_id)
    events.append(
        {
            "id": uuid.uuid4().hex[:8],
            "kind": kind,
            "onset_s": round(float(onset or 0.0), 3),
            "note": (state.get(field_key("note", task_id)) or "").strip(),
        }
    )
    events.sort(key=lambda e: e["onset_s"])
    state[field_key("onset", task_id)] = ""
    state[field_key("note", task_id)] = ""
    state[field_key("kind", task_id)] = None


def _remove(task_id: int, event_id: str) -> None:
    st.session_state[events_key(task_id)] = [e for e in marked(task_id) if e["id"] != event_id]


def for_submit(task_id: int) -> list[dict[str, Any]]:
    """The marked events as ``JudgmentSubmit.events`` takes them."""
    return [{"kind": e["kind"], "onset_s": e["onset_s"], "note": e["note"]} for e in marked(task_id)]


def clear(task_id: int) -> None:
    for key in [
        k for k in st.session_state if isinstance(k, str) and k.endswith(f"-{task_id}") and k.startswith("tl-")
    ]:
        del st.session_state[key]


# -- the picture ----------------------------------------------------------------------------------
def chart(view: TimelineView, audio: dict[str, bytes], marks: list[dict[str, Any]], *, height: int = 240) -> None:
    """Both tracks on one time axis; ``marks`` ({"onset_s", "kind", "note", optional "who"}) in red."""
    import altair as alt
    import pandas as pd

    x = alt.X(
        "t:Q", title="time (s)", scale=alt.Scale(domain=[0, view.duration_s], nice=False), axis=alt.Axis(grid=False)
    )
    y_axis = alt.Axis(
        values=[1, 0, _ACTION_Y],
        title=None,
        grid=False,
        labelFontWeight="bold",
        labelExpr="datum.value == 1 ? 'user' : datum.value == 0 ? 'assistant' : 'actions'",
    )
    y = alt.Y("y:Q", scale=alt.Scale(domain=[-1.7, 1.9]), axis=y_axis)
    layers = []
    step = view.chunk_ms / 1000 if view.n_chunks <= MAX_GRID_LINES else 1.0
    grid = pd.DataFrame({"t": [i * step for i in range(int(view.duration_s / step) + 1)]})
    layers.append(alt.Chart(grid).mark_rule(color="#999", opacity=0.18, strokeWidth=0.5).encode(x=x))
    for name, center in _CENTER.items():
        track = view.track(name)
        spans = pd.DataFrame(
            [{"t": a, "t2": b, "y": center - 0.45, "y2": center + 0.45} for a, b in track.speech]
            or [{"t": 0.0, "t2": 0.0, "y": center, "y2": center}]
        )
        layers.append(
            alt.Chart(spans)
            .mark_rect(color=COLORS[name], opacity=0.14)
            .encode(
                x=x,
                x2="t2:Q",
                y=y,
                y2="y2:Q",
                tooltip=[
                    alt.Tooltip("t:Q", title=f"{name} speaks from", format=".2f"),
                    alt.Tooltip("t2:Q", title="until", format=".2f"),
                ],
            )
        )
        if audio.get(name):
            t, lo, hi, _dur = widgets.envelope(audio[name], bins=600)
            peak = max(1e-6, max(abs(v) for v in lo + hi))
            wave = pd.DataFrame(
                {"t": t, "y": [center + 0.42 * v / peak for v in lo], "y2": [center + 0.42 * v / peak for v in hi]}
            )
            layers.append(
                alt.Chart(wave)
                .mark_area(color=COLORS[name], opacity=0.85, interpolate="step-after")
                .encode(x=x, y=y, y2="y2:Q")
            )
    if view.actions:
        acts = pd.DataFrame(
            [
                {
                    "t": a.t_s,
                    "y": _ACTION_Y,
                    "what": a.label or (a.tool_calls[0]["name"] if a.tool_calls else "plan"),
                    "tools": "; ".join(
                        f"{c['name']}({', '.join(f'{k}={v!r}' for k, v in c['arguments'].items())})"
                        for c in a.tool_calls
                    ),
                    "plan": a.plan[:200],
                }
                for a in view.actions
            ]
        )
        tip = [alt.Tooltip("t:Q", title="at (s)", format=".2f"), "what:N", "tools:N", "plan:N"]
        layers.append(
            alt.Chart(acts)
            .mark_point(shape="triangle-up", filled=True, size=70, color=COLORS["action"])
            .encode(x=x, y=y, tooltip=tip)
        )
        layers.append(
            alt.Chart(acts).mark_text(dy=14, fontSize=10, color=COLORS["action"]).encode(x=x, y=y, text="what:N")
        )
    if marks:
        df = pd.DataFrame(
            [
                {
                    "t": m["onset_s"],
                    "y": 1.75,
                    "kind": EVENT_LABELS.get(m["kind"], m["kind"]),
                    "note": m.get("note", ""),
                    "who": m.get("who", "you"),
                }
                for m in marks
            ]
        )
        tip = [alt.Tooltip("t:Q", title="onset (s)", format=".2f"), "kind:N", "note:N", "who:N"]
        layers.append(alt.Chart(df).mark_rule(color=COLORS["mark"], strokeWidth=2).encode(x=x, tooltip=tip))
        layers.append(
            alt.Chart(df)
            .mark_point(shape="triangle-down", filled=True, size=60, color=COLORS["mark"])
            .encode(x=x, y=y, tooltip=tip)
        )
    st.altair_chart(alt.layer(*layers).properties(height=height), width="stretch")


# -- players ------------------------------------------------------------------------------------------
def players(task_id: int, view: TimelineView, audio: dict[str, bytes]) -> tuple[list[str], dict[str, Any]]:
    """The stereo player (user left, assistant right) and one per track, with listen tracking.

    Returns (what is still unplayed, the tracker's reports). Hearing the stereo mix to the end,
    or each track to the end, unlocks Submit: both cover the whole session."""
    labels = [MIX] + [t for t in TRACK_LABELS if audio.get(t)]
    reports = listen.track(task_id, labels)
    played = {lb: listen.is_played(reports.get(lb), view.duration_s) for lb in labels}
    ok = played[MIX] or all(played[t] for t in labels[1:])
    with st.container(key=listen.clip_key(task_id, MIX), border=True):
        badge = ":green-badge[:material/check: played]" if ok else ":orange-badge[not played yet]"
        st.markdown(
            f"**Whole session** (stereo: user left, assistant right) · "
            f"{widgets.duration_label(view.duration_s)} · {badge}"
        )
        st.audio(audio[MIX], format="audio/wav")
    for col, name in zip(st.columns(len(labels) - 1 or 1), labels[1:]):
        with col, st.container(key=listen.clip_key(task_id, name), border=True):
            st.markdown(f"**{TRACK_LABELS[name]} track only**")
            st.audio(audio[name], format="audio/wav")
            transcript = view.track(name).transcript
            if transcript:
                with st.expander("Transcript"):
                    st.markdown(widgets.md_escape(transcript))
    return ([] if ok else [MIX]), reports


# -- marking events -----------------------------------------------------------------------------------
def event_editor(task_id: int, view: TimelineView) -> list[dict[str, Any]]:
    """The "Add event" form and the list of marked events (each removable); returns the list."""
    st.markdown("#### Mark what went wrong, and when")
    with st.form(field_key("add", task_id), border=True):
        c1, c2 = st.columns([2, 1])
        c1.selectbox(
            "What went wrong",
            list(EVENT_LABELS),
            index=None,
            format_func=EVENT_LABELS.get,
            placeholder="Pick a kind of event",
            key=field_key("kind", task_id),
        )
        c2.text_input(
            "Onset (seconds, or m:ss)",
            placeholder="e.g. 2.4",
            key=field_key("onset", task_id),
            help=f"When it starts, between 0 and {view.duration_s:.2f} s; read it off the picture's axis.",
        )
        st.text_input(
            "Note (optional)",
            max_chars=500,
            key=field_key("note", task_id),
            placeholder="e.g. talked over the user's question; called get_weather without a city",
        )
        st.form_submit_button(
            "Add event", on_click=_add, args=(task_id, view.duration_s), key=field_key("add-button", task_id)
        )
    error = st.session_state.pop(field_key("error", task_id), None)
    if error:
        st.error(error)
    events = marked(task_id)
    if not events:
        st.caption("No events marked yet. If nothing went wrong in this session, submit without events.")
    for e in events:
        c1, c2, c3 = st.columns([1, 5, 1], vertical_alignment="center")
        c1.markdown(f"**{e['onset_s']:.2f} s**")
        note = f" — {widgets.md_escape(e['note'])}" if e["note"] else ""
        c2.markdown(f"{widgets.md_escape(EVENT_LABELS[e['kind']])}{note}")
        c3.button("Remove", key=f"tl-del-{e['id']}-{task_id}", on_click=_remove, args=(task_id, e["id"]))
    return events


def events_side_by_side(judgments: list[Any]) -> None:
    """Reviewer view: one column per rater with the events they marked."""
    per_row = 4
    for start in range(0, len(judgments), per_row):
        row = judgments[start : start + per_row]
        for col, j in zip(st.columns(per_row), row):
            _rater_events(col, j)


def _rater_events(col: Any, j: Any) -> None:
    with col, st.container(border=True):
        st.markdown(f"**{widgets.md_escape(j.rater)}**")
        if not j.events:
            st.caption("marked no events")
        for e in j.events:
            note = f" — {widgets.md_escape(e.get('note'))}" if e.get("note") else ""
            st.markdown(f"{e['onset_s']:.2f} s · {widgets.md_escape(EVENT_LABELS.get(e['kind'], e['kind']))}{note}")
