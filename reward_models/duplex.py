"""Duplex metrics: turn-taking decisions and delays against labelled events; tool calls over cases.

Turn-taking (``evaluate_events``): each labelled event of a scenario (``LabelledEvent``: type,
onset ``t0``, optional offset) is judged on the *model's* timeline: its assistant speech spans and
its action channel, on its chunk clock. Let ``c0`` be the chunk containing ``t0``. "Turn speech" is
the assistant's speech spans except those that start at a chunk whose action is labelled
``backchannel`` (a short "mm-hm" from the assistant is not taking the turn). Decisions:

- ``normal`` (expect respond): the response time is the start of the first chunk ``c >= c0`` where
  the assistant has turn speech or an action labelled ``response``; ``delay = max(0, time - t0)``
  (the clock cannot resolve better than a chunk). Decision ``respond`` if ``delay <=
  respond_window_s``, else ``wait`` (the delay of a late response is still reported). Speech already
  under way at ``c0`` counts as a response with delay 0: talking over the user is judged at the
  pause and interrupt events, not here.
- ``pause`` (expect wait): the pause runs from ``c0`` to the chunk where the user resumes
  (``offset_s``; without one, ``respond_window_s`` after the onset). Turn speech or a ``response``
  action in it is ``respond`` (taking the turn too early; the delay says when), else ``wait``.
- ``interrupt`` (expect stop) and ``backchannel`` (expect continue) presuppose the assistant
  speaking: a turn-speech span ``S`` with ``S.start <= c0 < S.end``. Without one the decision is
  ``wait`` (nothing to stop or continue) and never counts as correct. With one, the stop time is
  the end of ``S``; ``delay = stop time - t0``. Decision ``stop`` if ``S`` ends before the
  timeline does and ``delay <= stop_window_s``, else ``continue``. A stop's delay is reported even
  when late; a ``continue`` has no delay.

``summarize`` aggregates per scenario type (and ``all``): ``n``, ``correct``, ``accuracy`` =
correct / n, and ``mean_delay_s`` / ``median_delay_s`` over the events of that type whose decision
was correct and has a delay (respond and stop; wait and continue have none).

Tool calls (``tool_call_metrics``) over cases of (expected calls, predicted calls); a case is
positive when it expects at least one call, predicted positive when the model made any:

- trigger precision = TP / (TP + FP), recall = TP / (TP + FN) (TP: positive case with calls,
  FP: negative case with calls, FN: positive case without calls); None when the denominator is 0;
- name accuracy, over TP cases: sum of |names(pred) ∩ names(expected)| (multiset intersection)
  divided by the sum of max(len(pred), len(expected)), so missing and extra calls both cost;
- argument accuracy: of the name-matched call pairs, the share whose arguments are equal under
  ``reward_models.verifiable.values_equal`` (same keys; numbers, case, punctuation and spelled
  numbers normalised); same-name calls are paired to maximise equal pairs;
- order accuracy: over TP cases expecting two or more calls whose predicted names cover the
  expected ones, the share whose predicted calls (extra calls dropped: for each name only its
  first k occurrences, k = how often it is expected) list the names in the expected order.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from earmark.domain.duplex import LabelledEvent, Span, Timeline
from reward_models.base import Scorer, ScoreResult, ScoringInput, register
from reward_models.verifiable import _parse_args, unordered_alignment, values_equal

RESPOND_WINDOW_S = 2.0
STOP_WINDOW_S = 1.0


@dataclass(frozen=True)
class EventOutcome:
    type: str
    onset_s: float
    expect: str
    decision: str
    correct: bool
    delay_s: float | None
    note: str = ""


def _turn_spans(model: Timeline) -> list[Span]:
    bc = {a.chunk for a in model.actions if a.label == "backchannel"}
    return [s for s in model.assistant.speech if s.start not in bc]


def _speaks(spans: list[Span], chunk: int) -> bool:
    return any(s.start <= chunk < s.end for s in spans)


def _first_turn_chunk(model: Timeline, spans: list[Span], lo: int, hi: int) -> int | None:
    """First chunk in [lo, hi) with turn speech or a ``response`` action."""
    responses = {a.chunk for a in model.actions if a.label == "response"}
    for c in range(lo, min(hi, model.n_chunks)):
        if c in responses or _speaks(spans, c):
            return c
    return None


def evaluate_events(
    model: Timeline,
    events: Sequence[LabelledEvent] | None = None,
    *,
    respond_window_s: float = RESPOND_WINDOW_S,
    stop_window_s: float = STOP_WINDOW_S,
) -> list[EventOutcome]:
    """One outcome per event (``events`` default to the model timeline's own), rules in the module doc."""
    events = list(model.events if events is None else events)
    spans = _turn_spans(model)
    out = []
    for ev in events:
        t0, c0 = ev.onset_s, model.chunk_at(ev.onset_s)
        delay: float | None = None
        note = ""
        if ev.type == "normal":
            c = _first_turn_chunk(model, spans, c0, model.n_chunks)
            if c is not None:
                delay = max(0.0, model.seconds(c) - t0)
            decision = "respond" if delay is not None and delay <= respond_window_s + 1e-9 else "wait"
        elif ev.type == "pause":
            hi = model.chunk_at(ev.offset_s) if ev.offset_s is not None else model.chunk_at(t0 + respond_window_s) + 1
            c = _first_turn_chunk(model, spans, c0, max(hi, c0 + 1))
            if c is not None:
                delay = max(0.0, model.seconds(c) - t0)
                note = "took the turn during the pause"
            decision = "respond" if c is not None else "wait"
        else:  # interrupt / backchannel: the assistant must be speaking at the event
            cur = next((s for s in spans if s.start <= c0 < s.end), None)
            if cur is None:
                decision, note = "wait", "the assistant was not speaking at the event"
            else:
                ended = cur.end < model.n_chunks
                d = model.seconds(cur.end) - t0
                if ended:
                    delay = d
                decision = "stop" if ended and d <= stop_window_s + 1e-9 else "continue"
                if ev.type == "backchannel" and decision == "continue":
                    delay = None
        out.append(
            EventOutcome(
                type=ev.type,
                onset_s=t0,
                expect=str(ev.expect),
                decision=decision,
                correct=decision == ev.expect,
                delay_s=delay,
                note=note,
            )
        )
    return out


@dataclass
class TypeSummary:
    n: int = 0
    correct: int = 0
    accuracy: float | None = None
    mean_delay_s: float | None = None
    median_delay_s: float | None = None
    delays: list[float] = field(default_factory=list)


def summarize(outcomes: Sequence[EventOutcome]) -> dict[str, TypeSummary]:
    """Per scenario type plus ``all``: accuracy and mean/median delay of correct decisions."""
    groups: dict[str, list[EventOutcome]] = {}
    for o in outcomes:
        groups.setdefault(o.type, []).append(o)
        groups.setdefault("all", []).append(o)
    out = {}
    for name, items in groups.items():
        delays = [o.delay_s for o in items if o.correct and o.delay_s is not None]
        correct = sum(o.correct for o in items)
        out[name] = TypeSummary(
            n=len(items),
            correct=correct,
            accuracy=correct / len(items),
            delays=delays,
            mean_delay_s=statistics.fmean(delays) if delays else None,
            median_delay_s=statistics.median(delays) if delays else None,
        )
    return out


# ---- tool calls ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolCase:
    expected: list[dict[str, Any]]
    predicted: list[dict[str, Any]]


@dataclass
class ToolCallMetrics:
    n_cases: int = 0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    trigger_precision: float | None = None
    trigger_recall: float | None = None
    name_slots: int = 0
    names_matched: int = 0
    name_accuracy: float | None = None
    argument_pairs: int = 0
    arguments_correct: int = 0
    argument_accuracy: float | None = None
    order_cases: int = 0
    order_correct: int = 0
    order_accuracy: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def _name(call: dict[str, Any]) -> str:
    return str(call.get("name", "")).strip()


def _args_equal(p: dict[str, Any], e: dict[str, Any]) -> bool:
    return values_equal(_parse_args(p.get("arguments")), _parse_args(e.get("arguments")))


def _in_order(pred: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    left = Counter(_name(c) for c in expected)
    kept = []
    for c in pred:
        if left[_name(c)] > 0:
            left[_name(c)] -= 1
            kept.append(_name(c))
    return kept == [_name(c) for c in expected]


def tool_call_metrics(cases: Sequence[ToolCase | tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> ToolCallMetrics:
    """Trigger precision/recall, name, argument and order accuracy (definitions in the module doc).

    Tuples are ``(expected, predicted)``."""
    m = ToolCallMetrics()
    for case in cases:
        exp, pred = (case.expected, case.predicted) if isinstance(case, ToolCase) else case
        exp, pred = list(exp or []), list(pred or [])
        m.n_cases += 1
        if not exp:
            m.fp += bool(pred)
            m.tn += not pred
            continue
        if not pred:
            m.fn += 1
            continue
        m.tp += 1
        m.name_slots += max(len(pred), len(exp))
        pc, ec = Counter(map(_name, pred)), Counter(map(_name, exp))
        m.names_matched += sum((pc & ec).values())
        for name in pc.keys() & ec.keys():
            ps = [c for c in pred if _name(c) == name]
            es = [c for c in exp if _name(c) == name]
            m.argument_pairs += min(len(ps), len(es))
            m.arguments_correct += int(
                round(unordered_alignment([[1.0 if _args_equal(p, e) else 0.0 for e in es] for p in ps]))
            )
        if len(exp) >= 2 and not (ec - pc):
            m.order_cases += 1
            m.order_correct += _in_order(pred, exp)
    m.trigger_precision = _ratio(m.tp, m.tp + m.fp)
    m.trigger_recall = _ratio(m.tp, m.tp + m.fn)
    m.name_accuracy = _ratio(m.names_matched, m.name_slots)
    m.argument_accuracy = _ratio(m.arguments_correct, m.argument_pairs)
    m.order_accuracy = _ratio(m.order_correct, m.order_cases)
    return m


# ---- scorer -------------------------------------------------------------------------------------
def reference_events(reference: dict[str, Any] | None) -> list[LabelledEvent] | None:
    """Labelled events of a duplex prompt's ``reference['timeline']``, or None when there are none."""
    tl = (reference or {}).get("timeline")
    if not isinstance(tl, dict) or not tl.get("events"):
        return None
    return [LabelledEvent.model_validate(e) for e in tl["events"]]


@register("turn_taking")
class TurnTakingScorer(Scorer):
    """``turn_taking_accuracy``: share of the scenario's labelled events (the prompt's
    ``reference['timeline']['events']``, else the rollout timeline's own) where the model's
    decision matched; per-event decisions and delays, and the mean delay of correct responses and
    stops (``mean_delay_s``), are in features. Rules and windows: see the module doc."""

    kind = "verifiable"
    dimensions = ("turn_taking_accuracy",)
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {"respond_window_s": RESPOND_WINDOW_S, "stop_window_s": STOP_WINDOW_S}

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        if not item.timeline:
            raise ValueError(
                f"rollout {item.rollout_id}: no duplex timeline; the turn_taking scorer needs "
                "rollouts with a timeline (duplex policy mode or `earmark duplex import`)"
            )
        model = Timeline.model_validate(item.timeline)
        events = reference_events(item.reference) or list(model.events)
        if not events:
            raise ValueError(
                f"rollout {item.rollout_id}: no labelled events in the prompt's reference timeline "
                "or the rollout's; generate scenarios with `earmark duplex generate`"
            )
        outcomes = evaluate_events(
            model,
            events,
            respond_window_s=float(self.config["respond_window_s"]),
            stop_window_s=float(self.config["stop_window_s"]),
        )
        summary = summarize(outcomes)["all"]
        feats = {
            "events": [asdict(o) for o in outcomes],
            "mean_delay_s": summary.mean_delay_s,
            "median_delay_s": summary.median_delay_s,
            "n_events": summary.n,
            "correct": summary.correct,
        }
        why = "; ".join(
            f"{o.type}@{o.onset_s:.2f}s: {o.decision}" + (f" after {o.delay_s:.2f}s" if o.delay_s is not None else "")
            for o in outcomes
        )
        return [
            ScoreResult(
                dimension="turn_taking_accuracy",
                score=float(summary.accuracy or 0.0),
                rationale=why[:4000],
                features=feats,
            )
        ]
