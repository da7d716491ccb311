"""Synthetic duplex scenarios: real eSpeak NG speech, events at the audio's true edges, determinism."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from earmark.domain.duplex import Timeline
from earmark.domain.records import PromptCreate
from earmark.services.timelines import DuplexSessionLine
from pipelines.duplex.scenarios import (
    ACTIVITY_THRESHOLD,
    BACKCHANNEL_TAIL_S,
    SCENARIO_KINDS,
    generate_scenario,
    scenario_suite,
)


def _loud(audio: np.ndarray) -> np.ndarray:
    return np.abs(audio) > ACTIVITY_THRESHOLD


def _sample(sc, seconds: float) -> int:
    return int(round(seconds * sc.sample_rate))


def _assert_edge(sc, onset_s: float, *, speech_before: bool) -> None:
    """At a sample-accurate event edge the audio switches between audible and silent exactly there."""
    i = _sample(sc, onset_s)
    loud = _loud(sc.user_audio)
    if speech_before:  # the user just stopped: the last audible sample is i-1
        assert loud[i - 1] and not loud[i : i + int(0.2 * sc.sample_rate)].any()
    else:  # the user just started: the first audible sample is i
        assert loud[i] and not loud[i - int(0.2 * sc.sample_rate) : i].any()


@pytest.mark.parametrize("kind", SCENARIO_KINDS)
def test_every_kind_is_real_speech_with_consistent_tracks(kind: str) -> None:
    sc = generate_scenario(kind, seed=5)
    tl = sc.timeline
    assert sc.id == f"duplex-{kind}-5" and sc.kind == kind and sc.sample_rate == 22050
    assert sc.user_audio.size == round(tl.n_chunks * tl.chunk_s * sc.sample_rate)
    assert hashlib.sha256(sc.user_wav).hexdigest() == tl.user.audio_sha256
    assert float(np.sqrt(np.mean(sc.user_audio**2))) > 0.01  # speech, not silence
    # spans are measured on the audio: every chunk inside a span holds speech, every chunk outside is silent
    per_chunk = _loud(sc.user_audio).reshape(tl.n_chunks, -1).any(axis=1)
    in_span = np.zeros(tl.n_chunks, bool)
    for s in tl.user.speech:
        in_span[s.start : s.end] = True
    assert not per_chunk[~in_span].any()
    assert per_chunk[[s.start for s in tl.user.speech] + [s.end - 1 for s in tl.user.speech]].all()
    assert tl.user.transcript == sc.transcript and sc.transcript
    assert [e.onset_s for e in tl.events] == sorted(e.onset_s for e in tl.events)
    assert tl.events[-1].onset_s + 1.0 < tl.duration_s  # room to respond after the last event
    assert Timeline.model_validate(tl.to_json()) == tl


def test_normal_event_is_the_end_of_the_question() -> None:
    sc = generate_scenario("normal", seed=1)
    (ev,) = sc.timeline.events
    assert (ev.type, ev.expect) == ("normal", "respond") and sc.type == "normal"
    _assert_edge(sc, ev.onset_s, speech_before=True)
    assert not _loud(sc.user_audio)[_sample(sc, ev.onset_s) :].any()  # nothing more is said
    assert sc.tool_calls == [] and sc.tools is None and sc.assistant_turn is None


def test_pause_is_silent_between_its_known_onset_and_offset() -> None:
    for seed in range(4):
        sc = generate_scenario("pause", seed=seed)
        pause, end = sc.timeline.events
        assert (pause.type, pause.expect, end.type) == ("pause", "wait", "normal")
        assert 0.8 <= pause.offset_s - pause.onset_s <= 1.5 + 1e-3
        _assert_edge(sc, pause.onset_s, speech_before=True)
        _assert_edge(sc, pause.offset_s, speech_before=False)
        _assert_edge(sc, end.onset_s, speech_before=True)
        # the pause shows as a gap between two user speech spans on the chunk clock
        assert len(sc.timeline.user.speech) >= 2


def test_interrupt_lands_inside_the_scripted_assistant_turn() -> None:
    sc = generate_scenario("interrupt", seed=2)
    first, barge, end = sc.timeline.events
    turn = sc.assistant_turn
    assert (first.type, barge.type, barge.expect, end.type) == ("normal", "interrupt", "stop", "normal")
    assert turn.start_s > first.onset_s and turn.end_s - turn.start_s > 3.0
    frac = (barge.onset_s - turn.start_s) / (turn.end_s - turn.start_s)
    assert 0.3 - 1e-3 <= frac <= 0.6 + 1e-3
    _assert_edge(sc, barge.onset_s, speech_before=False)
    assert end.onset_s == barge.offset_s
    assert sc.timeline.meta["assistant_turn"] == turn.as_dict()
    assert sc.timeline.duration_s >= turn.end_s


def test_backchannel_is_short_and_well_before_the_turn_ends() -> None:
    sc = generate_scenario("backchannel", seed=3)
    bc = next(e for e in sc.timeline.events if e.type == "backchannel")
    assert bc.expect == "continue" and bc.offset_s - bc.onset_s < 1.0
    assert sc.assistant_turn.start_s + 1.0 <= bc.onset_s
    assert bc.offset_s <= sc.assistant_turn.end_s - BACKCHANNEL_TAIL_S + 1e-6
    _assert_edge(sc, bc.onset_s, speech_before=False)


def test_tool_cases_carry_expected_calls_and_schemas() -> None:
    multi = [generate_scenario("tool_call", s) for s in range(30)]
    assert all(sc.tool_calls and sc.tools for sc in multi)
    assert any(len(sc.tool_calls) == 2 for sc in multi) and any(len(sc.tool_calls) == 1 for sc in multi)
    offered = {t["function"]["name"] for t in multi[0].tools}
    assert all(c["name"] in offered and isinstance(c["arguments"], dict) for sc in multi for c in sc.tool_calls)
    neg = generate_scenario("no_tool_call", 4)
    assert neg.tool_calls == [] and neg.tools and neg.type == "normal"
    assert neg.reference()["tool_calls"] == []


def test_deterministic_per_seed() -> None:
    a, b = generate_scenario("interrupt", 11), generate_scenario("interrupt", 11)
    assert a.user_wav == b.user_wav and a.timeline == b.timeline
    c = generate_scenario("interrupt", 12)
    assert c.timeline != a.timeline
    s1, s2 = scenario_suite(12, seed=7), scenario_suite(12, seed=7)
    assert [s.id for s in s1] == [s.id for s in s2] and all(x.user_wav == y.user_wav for x, y in zip(s1, s2))


def test_suite_mixes_every_kind() -> None:
    suite = scenario_suite(12, seed=0)
    assert Counter(s.kind for s in suite) == {k: 2 for k in SCENARIO_KINDS}
    assert len({s.id for s in suite}) == 12
    assert [s.kind for s in suite] != [SCENARIO_KINDS[i % 6] for i in range(12)]  # shuffled


def test_records_validate_as_prompt_and_import_line() -> None:
    sc = generate_scenario("tool_call", 8)
    prompt = PromptCreate.model_validate(sc.prompt_record())
    assert prompt.regime == "duplex" and prompt.reference["tool_calls"] == sc.tool_calls
    part = prompt.messages[0].content[0]
    assert part.type == "audio" and part.transcript == sc.transcript and part.base64
    assert Timeline.model_validate(prompt.reference["timeline"]) == sc.timeline
    line = DuplexSessionLine.model_validate(sc.session_record())
    assert line.id == sc.id and not line.has_assistant() and line.timeline.user.base64
    assert line.timeline.events == sc.timeline.events


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="unknown scenario kind 'chitchat'.*normal, pause"):
        generate_scenario("chitchat", 1)
    with pytest.raises(ValueError, match="chunk_ms=5"):
        generate_scenario("normal", 1, chunk_ms=5)
    with pytest.raises(ValueError, match="at least one"):
        scenario_suite(0, 1)


def test_other_chunk_clock() -> None:
    sc = generate_scenario("pause", 1, chunk_ms=80)
    ref = generate_scenario("pause", 1)
    assert sc.timeline.chunk_ms == 80 and sc.timeline.events == ref.timeline.events  # same speech, finer clock
    assert sc.timeline.n_chunks >= 2 * ref.timeline.n_chunks - 1


def test_renders_do_not_depend_on_what_was_rendered_before() -> None:
    from pipelines.duplex.tts import render_fresh
    from pipelines.speech.espeak import render_text

    first, sr = render_fresh("Set a timer for ten minutes.", rate=165)
    render_text("The shared engine carries state from call to call.")
    render_fresh("Something else entirely, with many words.", rate=185, pitch=70)
    again, _ = render_fresh("Set a timer for ten minutes.", rate=165)
    assert sr == 22050 and first.size > sr and np.array_equal(first, again)


def test_same_bytes_in_a_fresh_process() -> None:
    import subprocess
    import sys
    from pathlib import Path

    generate_scenario("pause", 3)  # other renders first: they must not matter
    here = generate_scenario("interrupt", 11).timeline.user.audio_sha256
    code = (
        "from pipelines.duplex.scenarios import generate_scenario; "
        "print(generate_scenario('interrupt', 11).timeline.user.audio_sha256)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == here
