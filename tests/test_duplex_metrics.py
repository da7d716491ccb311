"""Turn-taking and tool-call metrics against hand-computed values on generated scenarios."""

from __future__ import annotations

import statistics

import pytest

from earmark.domain.duplex import Action, AudioTrack, Span, Timeline
from pipelines.duplex.scenarios import generate_scenario, render_assistant
from reward_models.base import ScoringInput, build_scorer, list_scorers
from reward_models.duplex import ToolCase, evaluate_events, summarize, tool_call_metrics


def _model(sc, spans: list[tuple[int, int]], actions: list[Action] | None = None) -> Timeline:
    """The scenario's session as a model produced it: assistant speech on the given chunk spans
    (the session runs on past the scenario when the model speaks longer)."""
    n = max([sc.timeline.n_chunks, *(b for _, b in spans)])
    return sc.timeline.model_copy(
        update={
            "n_chunks": n,
            "assistant": AudioTrack(speech=[Span(start=a, end=b) for a, b in spans]),
            "actions": actions or [],
        }
    )


def _by_type(outcomes):
    return {(o.type, round(o.onset_s, 6)): o for o in outcomes}


def test_response_after_a_known_delay_in_real_audio() -> None:
    sc = generate_scenario("normal", 1)
    tl, (ev,) = sc.timeline, sc.timeline.events
    c0 = tl.chunk_at(ev.onset_s)
    # the assistant starts speaking exactly 3 chunks after the chunk in which the user stopped
    audio, spans = render_assistant(sc, [(tl.seconds(c0 + 3), "The library opens at ten in the morning.")])
    assert spans[0].start == c0 + 3
    model = tl.model_copy(update={"assistant": AudioTrack(speech=spans)})
    (o,) = evaluate_events(model, tl.events)
    assert (o.decision, o.correct) == ("respond", True)
    assert o.delay_s == pytest.approx((c0 + 3) * 0.16 - ev.onset_s)
    assert 0.32 < o.delay_s <= 0.48
    # a response 16 chunks (2.56 s) later is outside the 2 s window: a miss, its delay still reported
    (late,) = evaluate_events(_model(sc, [(c0 + 16, c0 + 30)]), tl.events)
    assert (late.decision, late.correct) == ("wait", False)
    assert late.delay_s == pytest.approx((c0 + 16) * 0.16 - ev.onset_s)
    # a `response` action counts as taking the turn even before the audio starts
    (act,) = evaluate_events(_model(sc, [(c0 + 5, c0 + 20)], [Action(chunk=c0 + 1, label="response")]), tl.events)
    assert act.decision == "respond" and act.delay_s == pytest.approx((c0 + 1) * 0.16 - ev.onset_s)
    # never answering: wait, no delay
    (silent,) = evaluate_events(_model(sc, []), tl.events)
    assert (silent.decision, silent.delay_s, silent.correct) == ("wait", None, False)


def test_taking_the_turn_during_a_pause_is_wrong() -> None:
    sc = generate_scenario("pause", 2)
    tl = sc.timeline
    pause, end = tl.events
    cp, ce = tl.chunk_at(pause.onset_s), tl.chunk_at(end.onset_s)
    assert tl.chunk_at(pause.offset_s) >= cp + 5  # a pause of >= 0.8 s spans at least 5 chunks
    eager = evaluate_events(_model(sc, [(cp + 2, tl.n_chunks)]), tl.events)
    assert [(o.type, o.decision, o.correct) for o in eager] == [
        ("pause", "respond", False),
        ("normal", "respond", True),
    ]
    assert eager[0].delay_s == pytest.approx((cp + 2) * 0.16 - pause.onset_s)
    assert eager[1].delay_s == 0.0  # already speaking when the user finished
    patient = evaluate_events(_model(sc, [(ce + 2, tl.n_chunks)]), tl.events)
    assert [(o.decision, o.correct) for o in patient] == [("wait", True), ("respond", True)]
    assert patient[0].delay_s is None and patient[1].delay_s == pytest.approx((ce + 2) * 0.16 - end.onset_s)
    # an assistant "mm-hm" in the pause (labelled backchannel) is not taking the turn
    bc = evaluate_events(
        _model(sc, [(cp + 1, cp + 3), (ce + 2, tl.n_chunks)], [Action(chunk=cp + 1, label="backchannel")]), tl.events
    )
    assert bc[0].decision == "wait" and bc[0].correct
    s = summarize(eager + patient)
    assert (s["pause"].n, s["pause"].correct, s["pause"].accuracy) == (2, 1, 0.5)
    assert s["normal"].accuracy == 1.0
    assert s["normal"].mean_delay_s == pytest.approx((0.0 + (ce + 2) * 0.16 - end.onset_s) / 2)


def test_stopping_or_not_at_a_barge_in() -> None:
    sc = generate_scenario("interrupt", 3)
    tl = sc.timeline
    first, barge, end = tl.events
    cs, cb, ce = round(sc.assistant_turn.start_s / 0.16), tl.chunk_at(barge.onset_s), tl.chunk_at(end.onset_s)
    polite = evaluate_events(_model(sc, [(cs, cb + 2), (ce + 3, tl.n_chunks)]), tl.events)
    assert [(o.type, o.decision, o.correct) for o in polite] == [
        ("normal", "respond", True),
        ("interrupt", "stop", True),
        ("normal", "respond", True),
    ]
    assert polite[0].delay_s == pytest.approx(cs * 0.16 - first.onset_s)
    assert polite[1].delay_s == pytest.approx((cb + 2) * 0.16 - barge.onset_s)
    assert 0.16 < polite[1].delay_s <= 0.32
    assert polite[2].delay_s == pytest.approx((ce + 3) * 0.16 - end.onset_s)
    stubborn = evaluate_events(_model(sc, [(cs, tl.n_chunks)]), tl.events)
    assert [(o.decision, o.correct) for o in stubborn] == [("respond", True), ("continue", False), ("respond", True)]
    assert stubborn[1].delay_s is None  # never stopped
    late = evaluate_events(_model(sc, [(cs, cb + 9)]), tl.events)  # stops 1.28-1.44 s after the barge-in
    assert (late[1].decision, late[1].correct) == ("continue", False)
    assert late[1].delay_s == pytest.approx((cb + 9) * 0.16 - barge.onset_s)
    quiet = evaluate_events(_model(sc, [(cs, cb - 3)]), tl.events)  # already done before the barge-in
    assert (quiet[1].decision, quiet[1].correct) == ("wait", False)

    # per-type aggregation over the three models, by hand
    s = summarize(polite + stubborn + quiet)
    assert (s["interrupt"].n, s["interrupt"].correct) == (3, 1)
    assert s["interrupt"].accuracy == pytest.approx(1 / 3)
    assert s["interrupt"].mean_delay_s == s["interrupt"].median_delay_s == pytest.approx(polite[1].delay_s)
    normal_delays = [polite[0].delay_s, polite[2].delay_s, stubborn[0].delay_s, 0.0, quiet[0].delay_s]
    # quiet's final normal event: nothing after ce -> a miss without delay
    assert quiet[2].decision == "wait"
    assert s["normal"].correct == 5 and s["normal"].n == 6
    assert s["normal"].mean_delay_s == pytest.approx(sum(normal_delays) / 5)
    assert s["normal"].median_delay_s == pytest.approx(statistics.median(normal_delays))
    assert s["all"].n == 9 and s["all"].correct == 6


def test_backchannel_should_not_stop_the_assistant() -> None:
    sc = generate_scenario("backchannel", 4)
    tl = sc.timeline
    bc = next(e for e in tl.events if e.type == "backchannel")
    cs, ct, cb = round(sc.assistant_turn.start_s / 0.16), tl.chunk_at(sc.assistant_turn.end_s), tl.chunk_at(bc.onset_s)
    keeps = evaluate_events(_model(sc, [(cs, ct + 1)]), tl.events)
    assert [(o.type, o.decision, o.correct) for o in keeps] == [
        ("normal", "respond", True),
        ("backchannel", "continue", True),
    ]
    assert keeps[1].delay_s is None
    yields = evaluate_events(_model(sc, [(cs, cb + 2)]), tl.events)
    assert (yields[1].decision, yields[1].correct) == ("stop", False)
    assert yields[1].delay_s == pytest.approx((cb + 2) * 0.16 - bc.onset_s)
    s = summarize(keeps + yields)
    assert s["backchannel"].accuracy == 0.5 and s["backchannel"].mean_delay_s is None  # no correct delays


def test_tool_call_metrics_on_a_planted_set() -> None:
    def c(name, **args):
        return {"name": name, "arguments": args}

    W, T = c("get_weather", city="Paris", day="tomorrow"), c("set_timer", minutes=10)
    cases = [
        ([W], [c("get_weather", city="paris", day="Tomorrow")]),  # 1 TP, name ok, args ok (case)
        ([T], [c("set_timer", minutes="ten")]),  # 2 TP, args ok (number words)
        (
            [c("get_weather", city="Berlin", day="today"), c("create_reminder", text="pack an umbrella")],
            [c("create_reminder", text="Pack an umbrella."), c("get_weather", city="Berlin", day="today")],
        ),  # 3 swapped
        (
            [c("set_timer", minutes=5), c("play_music", genre="classical")],
            [c("set_timer", minutes=5), c("play_music", genre="jazz"), c("create_reminder", text="x")],
        ),  # 4 extra
        ([W], []),  # 5 FN
        ([], []),  # 6 TN
        ([], [c("play_music", genre="jazz")]),  # 7 FP
        ([], []),  # 8 TN
        (
            [c("set_lights", room="kitchen", on=False), c("lock_door", door="front")],
            [c("set_lights", room="kitchen", on=False)],
        ),  # 9 one of two
        ([T], [c("set_lights", room="kitchen", on=True)]),  # 10 wrong tool
    ]
    m = tool_call_metrics([ToolCase(expected=e, predicted=p) for e, p in cases])
    # Hand computation:
    #   TP = cases 1,2,3,4,9,10 = 6; FP = case 7 = 1; FN = case 5 = 1; TN = cases 6,8 = 2
    #   precision = 6 / (6 + 1); recall = 6 / (6 + 1)
    #   name slots (max(len pred, len exp)) = 1+1+2+3+2+1 = 10; names matched = 1+1+2+2+1+0 = 7 -> 0.7
    #   name-matched pairs = 1+1+2+2+1+0 = 7; equal arguments = 1+1+2+1(timer, not jazz)+1 = 6 -> 6/7
    #   order cases (>= 2 expected, all expected names predicted) = cases 3 and 4 (9 lacks lock_door);
    #   case 3 is swapped, case 4 is in order once the extra reminder is dropped -> 1/2
    assert (m.tp, m.fp, m.fn, m.tn, m.n_cases) == (6, 1, 1, 2, 10)
    assert m.trigger_precision == pytest.approx(6 / 7) and m.trigger_recall == pytest.approx(6 / 7)
    assert (m.names_matched, m.name_slots, m.name_accuracy) == (7, 10, 0.7)
    assert (m.arguments_correct, m.argument_pairs) == (6, 7) and m.argument_accuracy == pytest.approx(6 / 7)
    assert (m.order_correct, m.order_cases, m.order_accuracy) == (1, 2, 0.5)
    # tuples work too, and an all-negative set has no precision/recall rather than a made-up one
    empty = tool_call_metrics([([], []), ([], [])])
    assert empty.trigger_precision is None and empty.trigger_recall is None and empty.tn == 2


def test_scorers_read_the_timeline_and_the_reference_events() -> None:
    assert "turn_taking" in list_scorers()
    sc = generate_scenario("pause", 2)
    tl = sc.timeline
    cp = tl.chunk_at(tl.events[0].onset_s)
    eager = _model(sc, [(cp + 2, tl.n_chunks)]).model_copy(update={"events": []})  # events come from the prompt
    item = ScoringInput(rollout_id=7, regime="duplex", timeline=eager.to_json(), reference=sc.reference())
    (res,) = build_scorer("turn_taking").score_one(item)
    assert res.dimension == "turn_taking_accuracy" and res.score == 0.5
    assert [e["decision"] for e in res.features["events"]] == ["respond", "respond"]
    assert res.features["mean_delay_s"] == 0.0 and "pause@" in res.rationale
    with pytest.raises(ValueError, match="no duplex timeline"):
        build_scorer("turn_taking").score_one(ScoringInput(rollout_id=8, regime="duplex"))
    # tool calls made on the action channel reach the tool-call scorer
    call = {"name": "set_timer", "arguments": {"minutes": 10}}
    with_calls = eager.model_copy(update={"actions": [Action(chunk=cp + 9, label="response", tool_calls=[call])]})
    item = ScoringInput(regime="duplex", timeline=with_calls.to_json(), reference={"tool_calls": [call]})
    assert item.response_tool_calls == [call]
    (tc,) = build_scorer("tool_calls").score_one(item)
    assert tc.score == 1.0
