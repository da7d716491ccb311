"""What a rater (or reviewer) may see of a duplex session, and the checks on marked event times.

A duplex rollout carries its session as ``rollouts.timeline`` (``earmark.domain.duplex.Timeline``).
The annotation view keeps only what judging turn-taking needs: the clock, the two tracks (audio
blob, transcript, speech spans in seconds) and the action channel (turn labels, planning text,
tool calls). It drops ``meta`` (a generator or policy may record its own name or settings there)
and the scenario's labelled ground-truth events (showing them would tell the rater the answer).

Stereo rendering for listening (user left, assistant right) is done here from the two stored
tracks, so the store keeps one clip per channel and no mixed copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import ValidationError

from earmark import audio
from earmark.domain.duplex import Timeline
from earmark.errors import InvalidInput, NotFound

TRACKS = ("user", "assistant")
STEREO = "stereo"


@dataclass(frozen=True)
class TrackView:
    audio_sha256: str | None
    transcript: str
    speech: list[tuple[float, float]]  # voice activity, seconds [start, end)


@dataclass(frozen=True)
class ActionMark:
    t_s: float  # start of the chunk where the assistant acted
    label: str | None  # response / interrupt / backchannel
    plan: str
    tool_calls: list[dict[str, Any]]  # {"name", "arguments"}


@dataclass(frozen=True)
class TimelineView:
    chunk_ms: int
    n_chunks: int
    duration_s: float
    user: TrackView
    assistant: TrackView
    actions: list[ActionMark]

    def track(self, name: str) -> TrackView:
        if name not in TRACKS:
            raise NotFound(f"track {name!r} does not exist; use one of {', '.join(TRACKS)}")
        view: TrackView = getattr(self, name)
        return view


def parse_timeline(raw: dict[str, Any] | None, what: str) -> Timeline:
    """The stored timeline of ``what`` (for messages), or a clear error when it has none."""
    if not raw:
        raise NotFound(
            f"{what} has no duplex timeline; the timeline protocol rates duplex sessions only "
            "(create the campaign from duplex rollouts that carry a timeline)"
        )
    try:
        return Timeline.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(
            f"{what} has an invalid timeline ({'.'.join(map(str, err['loc']))}: {err['msg']}); re-import the session"
        ) from None


def timeline_view(tl: Timeline) -> TimelineView:
    def track(t: Any) -> TrackView:
        return TrackView(t.audio_sha256, t.transcript, [(tl.seconds(s.start), tl.seconds(s.end)) for s in t.speech])

    actions = [
        ActionMark(tl.seconds(a.chunk), a.label, a.plan, [c.model_dump(mode="json") for c in a.tool_calls])
        for a in tl.actions
    ]
    return TimelineView(tl.chunk_ms, tl.n_chunks, round(tl.duration_s, 6), track(tl.user), track(tl.assistant), actions)


def onset_problem(onset_s: float, duration_s: float) -> str | None:
    """Why ``onset_s`` cannot be an event time in a session of ``duration_s``, or None if it can."""
    span = f"enter a time between 0 and {duration_s:.2f} s"
    if not isinstance(onset_s, int | float) or not math.isfinite(onset_s):
        return f"the onset {onset_s!r} is not a finite number of seconds; {span}"
    if onset_s < 0:
        return f"the onset {onset_s:.2f} s is before the session starts; {span}"
    if onset_s > duration_s:
        return f"the onset {onset_s:.2f} s is after the session ends at {duration_s:.2f} s; {span}"
    return None


def check_event_onsets(events: list[Any], duration_s: float) -> None:
    """Raise InvalidInput naming the first event whose onset lies outside the session."""
    for i, e in enumerate(events, start=1):
        problem = onset_problem(e.onset_s, duration_s)
        if problem:
            raise InvalidInput(f"event {i} ({e.kind}): {problem}")


def _mono(data: bytes) -> tuple[np.ndarray, int]:
    samples, sr = audio.decode(data)
    return (samples.mean(axis=1) if samples.ndim > 1 else samples).astype(np.float32), sr


def render_stereo(view: TimelineView, get_bytes: Any) -> bytes:
    """The session as one stereo WAV, user left and assistant right, as long as the timeline.

    A side with no audio (a silent assistant) is silence, so the two channels stay aligned."""
    tracks: dict[str, tuple[np.ndarray, int] | None] = {}
    for name in TRACKS:
        sha = view.track(name).audio_sha256
        tracks[name] = _mono(get_bytes(sha)) if sha else None
    if not any(tracks.values()):
        raise NotFound("neither track of this session has audio; there is nothing to play")
    sr = max(t[1] for t in tracks.values() if t)
    silent = (np.zeros(1, dtype=np.float32), sr)
    return audio.stereo_wav(tracks["user"] or silent, tracks["assistant"] or silent, duration_s=view.duration_s)
