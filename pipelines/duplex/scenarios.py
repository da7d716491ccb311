"""Synthetic full-duplex scenarios: eSpeak NG user speech with turn-taking events at known times.

    from pipelines.duplex.scenarios import generate_scenario, scenario_suite
    sc = generate_scenario("pause", seed=3)          # one scenario
    suite = scenario_suite(24, seed=0)                # every kind, shuffled, deterministic

Kinds (``SCENARIO_KINDS``) and what a good assistant does:

- ``normal``: the user asks and stops -> respond (event ``normal`` at the end of the question);
- ``pause``: the user stops mid-sentence for 0.8-1.5 s, then goes on -> wait through the pause
  (event ``pause`` from the pause onset to where speech resumes), then respond at the end;
- ``interrupt``: the user asks, the assistant answers (``assistant_turn``), the user barges in
  30-60 % into that answer -> stop (event ``interrupt`` at the barge-in onset), then respond
  when the barge-in ends;
- ``backchannel``: as interrupt, but the user only says "mm hmm" / "yeah" while the assistant
  speaks, at least 2.5 s before its turn would end -> continue;
- ``tool_call``: a normal turn whose request needs tools; ``tool_calls`` lists the expected
  calls ``{"name", "arguments"}`` in the order they must be made (multi-action cases have 2);
- ``no_tool_call``: a normal turn with tools offered where none should fire (``tool_calls == []``).

Every user utterance is rendered by eSpeak NG, trimmed to its first and last sample above
``ACTIVITY_THRESHOLD`` and placed at a known sample offset of one session-aligned mono track, so
event times are exact sample positions of real speech edges (onset = first audible sample,
offset = one past the last). The user track's speech spans are measured from the rendered audio
(``activity_intervals``), not copied from the plan. Texts, voices, pauses and placements come
from ``random.Random(f"{kind}:{seed}")`` and every utterance is rendered from eSpeak NG's initial
state (``pipelines.duplex.tts``), so the same (kind, seed, chunk_ms) gives identical bytes in any
process, and a regenerated suite re-imports cleanly over a stored one.

``Scenario`` fields:

- ``id``: stable external id, ``duplex-<kind>-<seed>``; ``kind`` and ``seed`` as given;
- ``timeline``: ``earmark.domain.duplex.Timeline`` of the scenario: the user track (audio sha256
  of ``user_wav``, transcript, measured speech spans), the labelled ``events`` (type, onset_s,
  offset_s, expect), ``scenario`` (the turn-taking type; tool kinds are ``normal``) and ``meta``
  (kind, seed, voice, sample rate and ``assistant_turn`` where the assistant is meant to speak);
  the assistant track and action channel are empty (they are what a policy produces);
- ``user_audio`` / ``sample_rate``: the session-aligned user track (float32 mono, exactly
  ``n_chunks`` chunks long, decoded from ``user_wav``, the 16-bit WAV that is stored);
- ``transcript``: everything the user says, in time order;
- ``assistant_turn``: ``ScriptedTurn(text, start_s, end_s)`` for interrupt and backchannel (when an
  assistant that follows the script speaks; the barge-in / backchannel is timed against it), else None;
- ``tool_calls``: expected calls (``[]`` when none should fire); ``tools``: schemas offered, or None.

``prompt_record()`` gives a ``PromptCreate``-shaped dict (regime duplex, the user audio part with
its transcript, ``reference = {"timeline": ..., "tool_calls": [...]}``); ``session_record()`` a
line of the duplex JSONL that ``earmark duplex import`` reads.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np

from earmark.domain.duplex import DEFAULT_CHUNK_MS, AudioTrack, LabelledEvent, Timeline, spans_from_mask
from pipelines.duplex import script_bank as bank

SCENARIO_KINDS: tuple[str, ...] = ("normal", "pause", "interrupt", "backchannel", "tool_call", "no_tool_call")
GENERATOR = "earmark-synthetic-v1"
# |sample| above this counts as speech: eSpeak NG writes exact zeros between words, and its
# quietest audible frication stays well above 0.01 of full scale.
ACTIVITY_THRESHOLD = 0.01
# Gaps shorter than this are the inside of one utterance (stop closures, word gaps, commas),
# not a pause; the shortest planned pause (0.8 s) is well above it.
BRIDGE_GAP_S = 0.3
RESPONSE_ROOM_S = 2.5  # silence after the last user event: room for a response window of 2 s
LEAD_IN_S = (0.3, 0.6)
PAUSE_S = (0.8, 1.5)
ASSISTANT_GAP_CHUNKS = 3  # a scripted assistant starts 3 chunks (0.48 s) after the user stops
BARGE_IN_FRACTION = (0.3, 0.6)
BACKCHANNEL_TAIL_S = 2.5  # the assistant's turn goes on at least this long after a backchannel
USER_RATES = (155, 165, 175, 185)
USER_PITCH = (35, 70)
ASSISTANT_VOICE = {"rate": 175, "pitch": 25}


@dataclass(frozen=True)
class ScriptedTurn:
    """When an assistant that follows the script would be speaking: ``[start_s, end_s)``."""

    text: str
    start_s: float
    end_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "start_s": self.start_s, "end_s": self.end_s}


@dataclass(eq=False)  # holds numpy audio: compare timelines and user_wav, not the object
class Scenario:
    id: str
    kind: str
    seed: int
    timeline: Timeline
    user_audio: np.ndarray
    sample_rate: int
    transcript: str
    assistant_turn: ScriptedTurn | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] | None = None

    @property
    def type(self) -> str:
        """The turn-taking scenario type (normal / pause / interrupt / backchannel)."""
        return str(self.timeline.scenario)

    @cached_property
    def user_wav(self) -> bytes:
        from pipelines.speech.espeak import wav_bytes

        return wav_bytes(self.user_audio, self.sample_rate)

    def reference(self) -> dict[str, Any]:
        return {"timeline": self.timeline.to_json(), "tool_calls": [dict(c) for c in self.tool_calls]}

    def prompt_record(self, audio: str = "base64") -> dict[str, Any]:
        """A duplex prompt in the chat form (earmark.domain.messages); ``audio`` is ``base64`` or ``sha``."""
        part: dict[str, Any] = {"type": "audio", "transcript": self.transcript}
        part.update(_audio_ref(self.user_wav, audio))
        return {
            "external_id": self.id,
            "regime": "duplex",
            "messages": [{"role": "user", "content": [part]}],
            "reference": self.reference(),
            "tools": self.tools,
            "tags": ["duplex", f"duplex:{self.kind}"],
        }

    def session_record(self, audio: str = "base64", source: str = "synthetic") -> dict[str, Any]:
        """One line of the duplex JSONL (``earmark duplex import``): the scenario, no assistant side."""
        tl = self.timeline.to_json()
        tl["user"] = {k: v for k, v in tl["user"].items() if k != "audio_sha256"} | _audio_ref(self.user_wav, audio)
        line: dict[str, Any] = {
            "id": self.id,
            "source": source,
            "timeline": tl,
            "tool_calls": self.tool_calls,
            "tags": ["duplex", f"duplex:{self.kind}"],
        }
        if self.tools:
            line["tools"] = self.tools
        return line


def _audio_ref(wav: bytes, how: str) -> dict[str, str]:
    if how == "base64":
        return {"base64": base64.b64encode(wav).decode()}
    if how == "sha":
        return {"audio_sha256": hashlib.sha256(wav).hexdigest()}
    raise ValueError(f"audio={how!r}: use 'base64' (self-contained) or 'sha' (blobs already stored)")


# ---- measuring speech ---------------------------------------------------------------------------
def activity_intervals(
    audio: np.ndarray, sample_rate: int, *, threshold: float = ACTIVITY_THRESHOLD, bridge_gap_s: float = BRIDGE_GAP_S
) -> list[tuple[int, int]]:
    """Half-open sample ranges of speech: samples above ``threshold``, gaps under ``bridge_gap_s`` joined.

    Edges are exact samples (first audible sample, one past the last), so an event measured here
    and a span derived from it agree to the sample."""
    idx = np.flatnonzero(np.abs(np.asarray(audio, dtype=np.float32)) > threshold)
    if idx.size == 0:
        return []
    gap = bridge_gap_s * sample_rate
    breaks = np.flatnonzero(np.diff(idx) > gap) if math.isfinite(gap) else np.zeros(0, dtype=np.int64)
    starts = np.concatenate([idx[:1], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], idx[-1:]]) + 1
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


def chunk_mask(intervals: list[tuple[int, int]], n_chunks: int, chunk_samples: float) -> list[bool]:
    """Chunk ``c`` is active when ``[c, c+1) * chunk_samples`` overlaps any interval."""
    mask = [False] * n_chunks
    for a, b in intervals:
        first, last = int(a // chunk_samples), int(math.ceil(b / chunk_samples))
        for c in range(max(0, first), min(n_chunks, last)):
            mask[c] = True
    return mask


@lru_cache(maxsize=512)
def _render(text: str, rate: int, pitch: int) -> np.ndarray:
    """One utterance trimmed to its audible samples, rendered from eSpeak NG's initial state."""
    from pipelines.duplex.tts import render_fresh

    audio, _ = render_fresh(text, rate=rate, pitch=pitch)
    # Trim at a slightly higher level than ACTIVITY_THRESHOLD: 16-bit storage shifts samples by up
    # to ~3e-5, and the clip's first and last samples must stay audible in the stored WAV.
    spans = activity_intervals(audio, _sample_rate(), threshold=ACTIVITY_THRESHOLD * 1.1, bridge_gap_s=float("inf"))
    if not spans:
        raise RuntimeError(f"eSpeak NG rendered no audible speech for {text!r}; check the espeakng-loader install")
    out = audio[spans[0][0] : spans[-1][1]].copy()
    out.setflags(write=False)
    return out


@lru_cache(maxsize=1)
def _sample_rate() -> int:
    from pipelines.speech.espeak import sample_rate

    return sample_rate()


class _Session:
    """Places utterances on one session-aligned track and remembers their exact edges."""

    def __init__(self, voice: dict[str, int]) -> None:
        self.sr = _sample_rate()
        self.voice = voice
        self.pieces: list[tuple[int, np.ndarray]] = []
        self.cursor = 0  # samples
        self.said: list[str] = []

    def silence(self, seconds: float) -> None:
        self.cursor += int(round(seconds * self.sr))

    def say(self, text: str, at_s: float | None = None) -> tuple[float, float]:
        if at_s is not None:
            self.cursor = int(round(at_s * self.sr))
        clip = _render(text, self.voice["rate"], self.voice["pitch"])
        start = self.cursor
        self.pieces.append((start, clip))
        self.cursor += clip.size
        self.said.append(text)
        return start / self.sr, self.cursor / self.sr

    def audio(self, n_samples: int) -> np.ndarray:
        out = np.zeros(n_samples, dtype=np.float32)
        for start, clip in self.pieces:
            out[start : start + clip.size] += clip[: max(0, n_samples - start)]
        return np.clip(out, -1.0, 1.0)


def _assistant_seconds(text: str) -> float:
    return _render(text, ASSISTANT_VOICE["rate"], ASSISTANT_VOICE["pitch"]).size / _sample_rate()


# ---- the generator ------------------------------------------------------------------------------
def generate_scenario(kind: str, seed: int, chunk_ms: int = DEFAULT_CHUNK_MS) -> Scenario:
    """One scenario of ``kind`` (see ``SCENARIO_KINDS``), deterministic in ``(kind, seed)``."""
    if kind not in SCENARIO_KINDS:
        raise ValueError(f"unknown scenario kind {kind!r}; use one of {', '.join(SCENARIO_KINDS)}")
    if not 10 <= int(chunk_ms) <= 2000:
        raise ValueError(f"chunk_ms={chunk_ms} is outside 10-2000 ms; the duplex clock default is {DEFAULT_CHUNK_MS}")
    rng = random.Random(f"{kind}:{seed}")
    voice = {"rate": rng.choice(USER_RATES), "pitch": rng.randint(*USER_PITCH)}
    s = _Session(voice)
    chunk_s = chunk_ms / 1000.0
    events: list[LabelledEvent] = []
    turn: ScriptedTurn | None = None
    tool_calls: list[dict[str, Any]] = []
    tools: list[dict[str, Any]] | None = None
    s.silence(rng.uniform(*LEAD_IN_S))

    def asked(text: str) -> float:
        _, off = s.say(text)
        events.append(LabelledEvent(type="normal", onset_s=off, note="the user finished a turn"))
        return off

    def assistant_answers(after_s: float, text: str) -> ScriptedTurn:
        start = (math.ceil(after_s / chunk_s - 1e-9) + ASSISTANT_GAP_CHUNKS) * chunk_s
        return ScriptedTurn(text, round(start, 6), round(start + _assistant_seconds(text), 6))

    if kind in ("normal", "tool_call", "no_tool_call"):
        if kind == "normal":
            end = asked(rng.choice(bank.NORMAL_QUESTIONS))
        else:
            tools = list(bank.TOOLS.values())
            if kind == "tool_call":
                text, calls = rng.choice(bank.TOOL_REQUESTS)
                tool_calls = [{"name": c["name"], "arguments": dict(c["arguments"])} for c in calls]
            else:
                text = rng.choice(bank.NO_TOOL_REQUESTS)
            end = asked(text)
        end += RESPONSE_ROOM_S
    elif kind == "pause":
        first, second = rng.choice(bank.PAUSED_QUESTIONS)
        _, paused = s.say(first)
        s.silence(rng.uniform(*PAUSE_S))
        resumed, _ = s.say(second)
        events.append(
            LabelledEvent(
                type="pause", onset_s=paused, offset_s=resumed, note="the user paused mid-sentence and resumed"
            )
        )
        events.append(LabelledEvent(type="normal", onset_s=s.cursor / s.sr, note="the user finished a turn"))
        end = s.cursor / s.sr + RESPONSE_ROOM_S
    elif kind == "interrupt":
        question, answer, barge = rng.choice(bank.INTERRUPTS)
        turn = assistant_answers(asked(question), answer)
        at = turn.start_s + rng.uniform(*BARGE_IN_FRACTION) * (turn.end_s - turn.start_s)
        on, off = s.say(barge, at_s=at)
        events.append(
            LabelledEvent(
                type="interrupt", onset_s=on, offset_s=off, note="the user barged in while the assistant was speaking"
            )
        )
        events.append(LabelledEvent(type="normal", onset_s=off, note="the user finished the interruption"))
        end = max(off + RESPONSE_ROOM_S, turn.end_s + 0.5)
    else:  # backchannel
        question, answer = rng.choice(bank.BACKCHANNEL_QUESTIONS)
        turn = assistant_answers(asked(question), answer)
        token = rng.choice(bank.BACKCHANNELS)
        bc_len = _render(token, voice["rate"], voice["pitch"]).size / s.sr
        lo, hi = turn.start_s + 1.0, turn.end_s - BACKCHANNEL_TAIL_S - bc_len
        on, off = s.say(
            token, at_s=rng.uniform(lo, hi) if hi > lo else turn.start_s + 0.3 * (turn.end_s - turn.start_s)
        )
        events.append(
            LabelledEvent(
                type="backchannel",
                onset_s=on,
                offset_s=off,
                note="the user back-channelled while the assistant was speaking",
            )
        )
        end = turn.end_s + 1.5
    return _assemble(kind, seed, chunk_ms, s, end, events, turn, tool_calls, tools)


def _assemble(
    kind: str,
    seed: int,
    chunk_ms: int,
    s: _Session,
    end_s: float,
    events: list[LabelledEvent],
    turn: ScriptedTurn | None,
    tool_calls: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
) -> Scenario:
    from pipelines.speech.espeak import read_wav, wav_bytes

    chunk_samples = s.sr * chunk_ms / 1000.0
    n_chunks = int(math.ceil(end_s * s.sr / chunk_samples))
    # The stored clip is 16-bit PCM: measure activity on exactly what is stored.
    wav = wav_bytes(s.audio(int(round(n_chunks * chunk_samples))), s.sr)
    audio, _ = read_wav(wav)
    spans = spans_from_mask(chunk_mask(activity_intervals(audio, s.sr), n_chunks, chunk_samples))
    transcript = " ".join(s.said)
    meta: dict[str, Any] = {
        "kind": kind,
        "seed": seed,
        "generator": GENERATOR,
        "sample_rate": s.sr,
        "voice": dict(s.voice),
    }
    if turn is not None:
        meta["assistant_turn"] = turn.as_dict()
    timeline = Timeline(
        chunk_ms=chunk_ms,
        n_chunks=n_chunks,
        events=sorted(events, key=lambda e: e.onset_s),
        scenario="normal" if kind in ("tool_call", "no_tool_call") else kind,
        meta=meta,
        user=AudioTrack(audio_sha256=hashlib.sha256(wav).hexdigest(), transcript=transcript, speech=spans),
    )
    sc = Scenario(
        id=f"duplex-{kind}-{seed}",
        kind=kind,
        seed=seed,
        timeline=timeline,
        user_audio=audio,
        sample_rate=s.sr,
        transcript=transcript,
        assistant_turn=turn,
        tool_calls=tool_calls,
        tools=tools,
    )
    sc.__dict__["user_wav"] = wav  # the bytes the sha names; never re-encode
    return sc


def scenario_suite(
    n: int, seed: int, chunk_ms: int = DEFAULT_CHUNK_MS, kinds: tuple[str, ...] = SCENARIO_KINDS
) -> list[Scenario]:
    """``n`` scenarios cycling through ``kinds`` (every kind appears once per len(kinds)), shuffled;
    scenario ``i`` uses seed ``seed * 100_000 + i`` so suites of different seeds never share ids."""
    if n < 1:
        raise ValueError(f"n={n}: a suite needs at least one scenario")
    bad = [k for k in kinds if k not in SCENARIO_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown scenario kinds {bad or kinds}; use some of {', '.join(SCENARIO_KINDS)}")
    order = [kinds[i % len(kinds)] for i in range(n)]
    random.Random(f"suite:{seed}").shuffle(order)
    return [generate_scenario(k, seed * 100_000 + i, chunk_ms) for i, k in enumerate(order)]


def render_assistant(
    sc: Scenario, turns: list[tuple[float, str] | tuple[float, str, float | None]]
) -> tuple[np.ndarray, list[Any]]:
    """A session-aligned assistant track for ``sc``: each ``(start_s, text[, cut_s])`` spoken by the
    assistant voice from ``start_s`` (silenced from ``cut_s`` on, as a model that stops would be),
    with speech spans measured on the chunk clock like the user's. Returns (audio, spans).

    Reference sessions for tests and for checking a duplex policy against the scripted behaviour."""
    tl = sc.timeline
    chunk_samples = sc.sample_rate * tl.chunk_ms / 1000.0
    n = int(round(tl.n_chunks * chunk_samples))
    audio = np.zeros(n, dtype=np.float32)
    for turn in turns:
        start_s, text, cut_s = (*turn, None)[:3]
        s = _Session(ASSISTANT_VOICE)
        s.say(text, at_s=start_s)
        piece = s.audio(n)
        if cut_s is not None:
            piece[int(round(cut_s * sc.sample_rate)) :] = 0.0
        audio += piece
    audio = np.clip(audio, -1.0, 1.0)
    spans = spans_from_mask(chunk_mask(activity_intervals(audio, sc.sample_rate), tl.n_chunks, chunk_samples))
    return audio, spans
