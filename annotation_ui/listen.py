"""Knowing that a rater really played each clip.

Streamlit cannot observe ``st.audio`` playback, so a tiny ``st.components.v2`` component (inline
JavaScript, no build step, mounted in the page's own DOM rather than an iframe) listens to the media
events of the ``<audio>`` element inside each clip's keyed container
(``st.container(key="clip-<task>-<label>")`` gets the CSS class ``st-key-clip-<task>-<label>``), at
the document in the capture phase, so a clip played in the instant before the tracker mounted
still counts. For each clip it reports to Python:

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

from annotation_ui.browser import compact_js

PLAYED_FRACTION = 0.9

_JS = r"""
export default function (component) {
  const { data, setStateValue } = component;
  const prefix = data.prefix;
  const labels = data.labels;
  // State lives on window so a re-invocation of this function (every rerun) keeps it.
  const store = (window.__earmarkListen = window.__earmarkListen || { acc: {}, report: {} });
  const acc = (store.acc[prefix] = store.acc[prefix] || {});
  for (const l of labels) acc[l] = acc[l] || { covered: 0, played: 0, real: 0, rate: 1, ended: false, since: null };
  store.report[prefix] = () => {
    const out = {};
    for (const l of labels) {
      out[l] = { covered_ms: Math.round(acc[l].covered), played_ms: Math.round(acc[l].played),
                 real_ms: Math.round(acc[l].real), max_rate: acc[l].rate, ended: acc[l].ended };
    }
    setStateValue("listened", out);
  };
  const covered = (a) => {
    let s = 0;
    for (let i = 0; i < a.played.length; i++) s += a.played.end(i) - a.played.start(i);
    return s * 1000;
  };
  if (!store.listening) {
    // Media events do not bubble, but they do pass the document in the capture phase: one set of
    // listeners there sees every clip from the moment it exists, also one played before this
    // component mounted or after Streamlit replaced its <audio> node (no polling, no race).
    store.listening = true;
    const find = (audio) => {
      const box = audio.closest("[class*='st-key-clip-']");
      if (!box) return null;
      for (const c of box.classList) {
        if (!c.startsWith("st-key-")) continue;
        const key = c.slice("st-key-".length);
        for (const p of Object.keys(store.acc)) {
          if (key.startsWith(p) && store.acc[p][key.slice(p.length)]) return [p, key.slice(p.length)];
        }
      }
      return null;
    };
    const on = (type, fn) => document.addEventListener(type, (ev) => {
      const audio = ev.target;
      if (!(audio instanceof HTMLMediaElement)) return;
      const hit = find(audio);
      if (!hit) return;
      fn(audio, store.acc[hit[0]][hit[1]], () => store.report[hit[0]] && store.report[hit[0]]());
    }, true);
    const stop = (audio, a) => {
      if (a.since !== null) {
        const wall = performance.now() - a.since;
        a.played += wall * (audio.playbackRate || 1);
        a.real += wall;  // wall-clock time: 2x playback for 1 s is 1 s of listening
      }
      a.since = null;
      a.covered = Math.max(a.covered, covered(audio));
    };
    on("playing", (audio, a) => { a.since = performance.now(); a.rate = Math.max(a.rate, audio.playbackRate || 1); });
    on("ratechange", (audio, a) => { stop(audio, a); if (!audio.paused) a.since = performance.now(); a.rate = Math.max(a.rate, audio.playbackRate || 1); });
    on("waiting", (audio, a) => stop(audio, a));  // buffering is not listening
    on("timeupdate", (audio, a) => { a.covered = Math.max(a.covered, covered(audio)); });
    // at the end the element fires "pause" then "ended": report once (each report is a rerun)
    on("pause", (audio, a, report) => { stop(audio, a); if (!audio.ended) report(); });
    on("ended", (audio, a, report) => { stop(audio, a); a.ended = true; report(); });
  }
  // A clip that started before this task's tracker existed (its events found no entry, e.g. played
  // while the run that shows the item was still going): its own played ranges show what was heard;
  // at normal speed that is also the wall-clock time. One still playing is timed from here on.
  let missed = false;
  for (const l of labels) {
    const box = document.querySelector(`.st-key-${prefix}${l}`);
    const audio = box && box.querySelector("audio");
    const a = acc[l];
    if (!audio || a.covered > 0 || a.since !== null || audio.played.length === 0) continue;
    a.covered = covered(audio);
    if (a.real === 0) a.real = a.played = a.covered;
    a.ended = a.ended || audio.ended;
    a.rate = Math.max(a.rate, audio.playbackRate || 1);
    if (audio.paused) missed = true;
    else a.since = performance.now();  // its pause/ended event reports it
  }
  if (missed) store.report[prefix]();
  return () => {};
}
"""

_tracker = components_v2.component("earmark_listen_tracker", js=compact_js(_JS))


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
