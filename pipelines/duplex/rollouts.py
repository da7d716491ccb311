"""Duplex prompts in the rollout job: each (prompt, sample) work item is one duplex session.

A duplex prompt carries its scenario in ``reference["timeline"]`` (the user track's speech spans,
the labelled events; see ``pipelines.duplex.scenarios``). The session runs with
``pipelines.duplex.policy.DuplexRunner`` and comes back as one ``GeneratedSample`` whose audio is
the assistant's session-aligned track and whose ``extra`` holds the timeline and the context the
session was prompted with; ``pipelines.rollouts.store`` writes it like any other sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from earmark.domain.duplex import Timeline
from pipelines.duplex.policy import DuplexRunner, DuplexSettings, UserSpan
from pipelines.work_items import Result, WorkItem, derive_seed

if TYPE_CHECKING:
    from pipelines.policy.base import Policy, SamplingParams

# The settings rollouts of duplex prompts use: a policy trained only on dialogues almost never opens
# a turn with <pause> or <|end|> (~1e-6), so a hot decision temperature makes the K samples of a
# scenario differ in their decisions (recorded on every row; see DuplexSettings).
DEFAULT_SETTINGS = DuplexSettings(decision_temperature=12.0)
PUNCT_PULL = 2.0


def scenario_timeline(prompt_id: Any, reference: dict[str, Any] | None) -> Timeline:
    tl = (reference or {}).get("timeline")
    if not isinstance(tl, dict):
        raise ValueError(
            f"duplex prompt {prompt_id} has no reference.timeline; register duplex prompts with "
            "pipelines.duplex.scenarios (Scenario.prompt_record()) or give reference={'timeline': ...}"
        )
    return Timeline.model_validate(tl)


def user_spans(timeline: Timeline) -> list[UserSpan]:
    """The user's speech spans with what was said in each.

    Uses ``meta["utterances"]`` when the scenario lists them (``[{"text", "start_s", "end_s"}]``,
    matched to spans by overlap); otherwise the transcript's words are shared out over the spans in
    proportion to their length (eSpeak speaks at a steady rate, so this lands within a word or so),
    moved to a sentence mark when one is close.
    """
    spans = timeline.user.speech
    if not spans:
        raise ValueError(
            "the scenario's user track has no speech spans; measure them from the user audio "
            "(pipelines.duplex.scenarios.activity_intervals) before running a duplex session"
        )
    utts = timeline.meta.get("utterances")
    if isinstance(utts, list) and utts and all(isinstance(u, dict) and "text" in u for u in utts):
        texts: list[list[str]] = [[] for _ in spans]
        for u in utts:
            a, b = timeline.chunk_at(float(u.get("start_s", 0.0))), timeline.chunk_at(float(u.get("end_s", 0.0)))
            best = max(range(len(spans)), key=lambda i: min(b + 1, spans[i].end) - max(a, spans[i].start))
            texts[best].append(str(u["text"]))
        return [UserSpan(s.start, s.end, " ".join(t)) for s, t in zip(spans, texts)]
    words = timeline.user.transcript.split()
    cuts = _cut_points(words, [s.end - s.start for s in spans])
    return [UserSpan(s.start, s.end, " ".join(words[a:b])) for s, a, b in zip(spans, [0, *cuts], [*cuts, len(words)])]


def _cut_points(words: list[str], lengths: list[int]) -> list[int]:
    """Where to cut the transcript between spans: near each span's share of the words, preferring a
    cut right after a sentence mark (utterances of a scenario end in one), at most ``PUNCT_PULL``
    words away."""
    total, acc, prev, cuts = sum(lengths), 0, 0, []
    for i, n in enumerate(lengths[:-1]):
        acc += n
        est = len(words) * acc / total
        lo, hi = prev + 1, len(words) - (len(lengths) - 1 - i)
        if lo > hi:  # fewer words than spans: this span gets none
            cuts.append(prev)
            continue
        best = min(range(lo, hi + 1), key=lambda j: abs(j - est) - (PUNCT_PULL if words[j - 1][-1] in ".?!," else 0))
        cuts.append(best)
        prev = best
    return cuts


def generate(
    policy: Policy,
    items: list[WorkItem],
    params: SamplingParams,
    *,
    job_seed: int = 0,
    round: int = 0,
    settings: DuplexSettings | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[Result]:
    """One duplex session per work item; the seed derives from the item alone (not the batch).
    ``overrides`` (e.g. ``{"decision_temperature": 1.0}``) replace fields of ``settings``."""
    settings = settings or DEFAULT_SETTINGS
    if overrides:
        settings = DuplexSettings(**{**settings.as_dict(), **overrides})
    runner = DuplexRunner(policy, settings)
    tag = f"{getattr(policy, 'name', '?')}@{getattr(policy, 'version', '?')}"
    out = []
    for it in items:
        scenario = scenario_timeline(it.prompt_id, it.reference)
        if scenario.chunk_ms != settings.chunk_ms:
            runner = DuplexRunner(policy, DuplexSettings(**{**settings.as_dict(), "chunk_ms": scenario.chunk_ms}))
        seed = derive_seed(job_seed, round, it.prompt_id, it.sample_index, 0)
        head = [m for m in it.messages if m.get("role") == "system"]
        res = runner.run(head, user_spans(scenario), scenario, params, seed)
        out.append((it, [res.as_sample(runner.settings, tag)], seed))
    return out
