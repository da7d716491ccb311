"""Knowing that a rater really played each clip.

Streamlit cannot observe ``st.audio`` playback, so a tiny ``st.components.v2`` component (inline
JavaScript, no build step, mounted in the page's own DOM rather than an iframe) watches the
``<audio>`` element inside each clip's keyed container (``st.container(key="clip-<task>-<label>")``
gets the CSS class ``st-key-clip-<task>-<label>``). For each clip it reports to Python:

- ``covered_ms``: how much of the clip's timeline has been heard, from the media element's own
  ``played`` time ranges (seeking to the end does not count as hearing the middle);
- ``played_ms``: media time heard including replays (wall clock scaled by the playback rate);
- ``real_ms``: wall-clock listening time between ``playing`` and ``pause``/``ended``/``waiting``
  (stored as the judgment's ``listen_ms``), and ``max_rate``, the fastest playback speed used;
- ``ended``: whether playback reached the end at least once.

It reports on pause and on end (not every tick), so a rerun never interrupts playback. A clip
counts as played once ``covered_ms`` reaches ``PLAYED_FRACTION`` of its duration; the submit
button stays disabled until every clip is played, and the page re-checks before submitting.
Tests drive the same channel: AppTest sets the component's state, the browser test really plays.
"""

from __future__ import annotations

from typing import Any

import streamlit.components.v2 as components_v2

PLAYED_FRACTION = 0.9

_JS = r"""
export default function (component) {
  const { data, setStateValue } = component;
  const prefix = data.prefix;
  const labels = data.labels;
  // Accumulators live on window so a re-invocation of this function (every rerun) keeps them.
  const store = (window.__earmarkListen = window.__earmarkListen || {});
  const acc = (store[prefix] = store[prefix] || {});
  for (const l of labels) acc[l] = acc[l] || { covered: 0, played: 0, real: 0, rate: 1, ended: false };
  const covered = (a) => {
    let s = 0;
    for (let i = 0; i < a.played.length; i++) s += a.played.end(i) - a.played.start(i);
    return s * 1000;
  };
  const report = () => {
    const out = {};
    for (const l of labels) {
      out[l] = { covered_ms: Math.round(acc[l].covered), played_ms: Math.round(acc[l].played),
                 real_ms: Math.round(acc[l].real), max_rate: acc[l].rate, ended: acc[l].ended };
    }
    setStateValue("listened", out);
  };
  const attach = () => {
    for (const l of labels) {
      const box = document.querySelector(`.st-key-${prefix}${l}`);
      const audio = box && box.querySelector("audio");
      if (!audio || audio.dataset.earmarkTracked === prefix + l) continue;
      audio.dataset.earmarkTracked = prefix + l;
      let since = null;  // performance.now() when audible playback (re)started
      const stop = () => {
        if (since !== null) {
          const wall = performance.now() - since;
          acc[l].played += wall * (audio.playbackRate || 1);
          acc[l].real += wall;  // wall-clock time: 2x playback for 1 s is 1 s of listening
        }
        since = null;
        acc[l].covered = Math.max(acc[l].covered, covered(audio));
      };
      audio.addEventListener("playing", () => { since = performance.now(); acc[l].rate = Math.max(acc[l].rate, audio.playbackRate || 1); });
      audio.addEventListener("ratechange", () => { stop(); if (!audio.paused) since = performance.now(); acc[l].rate = Math.max(acc[l].rate, audio.playbackRate || 1); });
      audio.addEventListener("waiting", stop);  // buffering is not listening
      audio.addEventListener("timeupdate", () => { acc[l].covered = Math.max(acc[l].covered, covered(audio)); });
      // at the end the element fires "pause" then "ended": report once (each report is a rerun)
      audio.addEventListener("pause", () => { stop(); if (!audio.ended) report(); });
      audio.addEventListener("ended", () => { stop(); acc[l].ended = true; report(); });
    }
  };
  attach();
  // Streamlit may replace an <audio> node on rerun; look for new ones until the page moves on.
  const timer = setInterval(attach, 400);
  return () => clearInterval(timer);
}
"""

_tracker = components_v2.component("earmark_listen_tracker", js=_JS)


def clip_key(task_id: int, label: str) -> str:
    """Key of the container that holds one clip's player (the tracker finds the audio by it)."""
    return f"clip-{task_id}-{label}"


def tracker_key(task_id: int) -> str:
    return f"listen-{task_id}"


def _noop() -> None:
    """Registering a callback makes the component's state reach Python and rerun the page."""


def track(task_id: int, labels: list[str]) -> dict[str, dict[str, Any]]:
    """Mount the tracker for this task's clips; returns what the browser reported per label."""
    result = _tracker(
        key=tracker_key(task_id),
        data={"prefix": f"clip-{task_id}-", "labels": labels},
        default={"listened": {}},
        on_listened_change=_noop,
        height=0,
    )
    state = getattr(result, "listened", None) or {}
    return {k: v for k, v in state.items() if isinstance(v, dict)}


def is_played(report: dict[str, Any] | None, duration_s: float | None, min_real_fraction: float = 0.0) -> bool:
    """Heard: ``PLAYED_FRACTION`` of the clip's timeline covered, and at least ``min_real_fraction`` of
    its duration in real (wall-clock) time, so 4x playback does not count as listening
    (``EARMARK_LISTEN_MIN_REAL_FRACTION``)."""
    if not report:
        return False
    covered = float(report.get("covered_ms") or 0)
    if duration_s:
        real = float(report.get("real_ms", report.get("played_ms")) or 0)
        return covered >= PLAYED_FRACTION * duration_s * 1000 and real >= min_real_fraction * duration_s * 1000
    return bool(report.get("ended"))  # duration unknown: playing to the end is the only evidence


def listen_ms(reports: dict[str, dict[str, Any]], labels: list[str]) -> dict[str, int]:
    """Milliseconds listened per clip, as stored with the judgment (bounded like the domain model)."""
    out = {}
    for label in labels:
        r = reports.get(label) or {}
        raw = r.get("real_ms") if r.get("real_ms") is not None else r.get("played_ms")
        heard = float(raw or 0)
        out[label] = int(min(3_600_000, max(0.0, heard)))
    return out


def playback_rates(reports: dict[str, dict[str, Any]], labels: list[str]) -> dict[str, float]:
    """The highest playback speed the rater used per clip (1.0 = normal), stored with the judgment."""
    out = {}
    for label in labels:
        rate = (reports.get(label) or {}).get("max_rate")
        out[label] = round(min(16.0, max(0.0625, float(rate))), 3) if rate else 1.0
    return out
