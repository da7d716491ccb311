"""The duplex runner: its listen/speak/back-channel/stop decisions follow the LM's tokens.

Scenarios are built directly on the domain model (user speech spans on the 160 ms clock); the
policy is the real offline checkpoint with its tokenizer, and the assistant track is real eSpeak NG
audio. ``Forced`` replaces only the sampling step with given markup, so each test states a token
sequence and checks what the timeline makes of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from earmark.domain.duplex import AudioTrack, LabelledEvent, Span, Timeline
from pipelines.duplex.policy import CUE_OVERLAP, CUE_QUIET, DuplexRunner, DuplexSettings, UserSpan, is_backchannel
from pipelines.duplex.rollouts import user_spans
from pipelines.policy.base import SamplingParams

PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=40)
ANSWER = "Keep the soil damp and give it bright light every single morning, and turn the pot each week."


@pytest.fixture(scope="module")
def policy(checkpoint):
    import torch

    from pipelines.policy.offline.policy import OfflineSpeechPolicy

    torch.set_num_threads(1)
    return OfflineSpeechPolicy.from_pretrained(checkpoint)


class Forced(DuplexRunner):
    """The runner with its sampling step replaced by given markup (one string per decision)."""

    def __init__(self, policy, episodes: list[str], settings: DuplexSettings | None = None) -> None:
        super().__init__(policy, settings)
        self.episodes = [policy.tokenizer(m, add_special_tokens=False)["input_ids"] for m in episodes]
        self.contexts: list[list[int]] = []

    def _sample(self, context, params, seed, index):
        self.contexts.append(list(context))
        return list(self.episodes[index])


def scenario(
    spans: list[tuple[int, int, str]], n_chunks: int = 60, kind: str = "normal"
) -> tuple[Timeline, list[UserSpan]]:
    tl = Timeline(
        n_chunks=n_chunks,
        scenario=kind,
        user=AudioTrack(
            transcript=" ".join(t for _, _, t in spans), speech=[Span(start=a, end=b) for a, b, _ in spans]
        ),
        events=[LabelledEvent(type=kind, onset_s=spans[-1][1] * 0.16)],
    )
    return tl, [UserSpan(a, b, t) for a, b, t in spans]


def run(runner, spans, tl, seed=0):
    return runner.run([], spans, tl, PARAMS, seed)


def chunk_energy(res, chunk: int) -> float:
    cs = int(round(res.sample_rate * 0.16))
    return float(np.abs(res.audio[chunk * cs : (chunk + 1) * cs]).max(initial=0.0))


def test_leading_pauses_delay_the_response_and_tokens_are_one_sequence(policy) -> None:
    tl, spans = scenario([(2, 12, "How do I keep a plant alive?")])
    r = Forced(policy, [f"<pause><pause><pause><rate_slow> {ANSWER}<|end|>"])
    res = run(r, spans, tl)
    assert [(s.start, s.end) for s in res.timeline.assistant.speech][0][0] == 15  # user stopped at 12, waited 3
    a = res.timeline.actions[0]
    assert (a.chunk, a.label) == (15, "response") and ANSWER[:20] in a.plan
    d = res.decisions[0]
    assert (d["situation"], d["wait_chunks"], d["outcome"]) == ("turn", 3, "respond")
    assert all(chunk_energy(res, c) == 0.0 for c in range(0, 15)) and chunk_energy(res, 16) > 0.05
    # the sampled ids are the row's token_ids, and the prompt is what the snapshot will rebuild
    assert res.token_ids == r.episodes[0]
    assert res.context == [{"role": "user", "content": f"How do I keep a plant alive? {CUE_QUIET}"}]
    assert r.contexts[0] == policy.prompt_ids(res.context, PARAMS.max_new_tokens)
    assert res.text.startswith("Keep the soil damp") and res.timeline.assistant.transcript == res.text


def test_mid_sentence_pause_waited_out_then_respond(policy) -> None:
    tl, spans = scenario([(2, 10, "I was wondering, um,"), (16, 24, "how to keep a plant alive?")], kind="pause")
    # decision 1 (user quiet at 10): wait 8 chunks -> planned for 18, but the user resumes at 16
    r = Forced(policy, ["<pause>" * 8 + " Sure.<|end|>", f" {ANSWER}<|end|>"])
    res = run(r, spans, tl)
    assert [d["outcome"] for d in res.decisions] == ["listen", "respond"]
    assert res.decisions[0]["preempted_at"] == 16
    assert res.timeline.assistant.speech[0].start == 24  # nothing was said during the pause
    assert all(chunk_energy(res, c) == 0.0 for c in range(0, 24))
    # the second decision continued the same sequence: prompt + decision 1 + the observed user turn
    obs = res.timeline.meta["duplex"]["observation_spans"]
    assert obs == [[len(r.episodes[0]), len(r.episodes[0]) + (obs[0][1] - obs[0][0])]]
    seen = policy.tokenizer.decode(res.token_ids[obs[0][0] : obs[0][1]], skip_special_tokens=False)
    assert seen == f"<|user|>how to keep a plant alive? {CUE_QUIET}<|end|><|assistant|>"
    assert r.contexts[1] == r.contexts[0] + res.token_ids[: obs[0][1]]


def test_premature_response_speaks_into_the_pause(policy) -> None:
    tl, spans = scenario([(2, 10, "I was wondering, um,"), (30, 36, "how to keep a plant alive?")], kind="pause")
    r = Forced(policy, [" Water it weekly.<|end|>", "<|end|>"])
    res = run(r, spans, tl)
    assert res.decisions[0]["outcome"] == "respond" and res.timeline.assistant.speech[0].start == 10
    assert res.decisions[1]["outcome"] == "silent"  # the final turn: the model chose to say nothing


def test_stop_on_interrupt_cuts_the_assistant_audio(policy) -> None:
    tl, spans = scenario([(2, 10, "How do I keep a plant alive?"), (16, 22, "wait, hold on")], kind="interrupt")
    r = Forced(policy, [f" {ANSWER}<|end|>", "<pause><|end|>", "<|end|>"])
    res = run(r, spans, tl)
    assert [(d["situation"], d["outcome"]) for d in res.decisions] == [
        ("turn", "respond"),
        ("overlap", "stop"),
        ("turn", "silent"),
    ]
    assert res.decisions[1]["heard"] == "wait, hold on" and res.decisions[1]["wait_chunks"] == 1
    assert [(s.start, s.end) for s in res.timeline.assistant.speech] == [(10, 17)]  # yielded one chunk after onset
    assert chunk_energy(res, 12) > 0.05
    assert all(chunk_energy(res, c) == 0.0 for c in range(17, res.timeline.n_chunks))  # cut: silence after the stop
    stop = res.timeline.action_at(17)
    assert stop is not None and stop.label is None and stop.plan.startswith("stop")
    assert "cut after 7 of" in res.timeline.action_at(10).plan
    seen = policy.tokenizer.decode(res.token_ids, skip_special_tokens=False)
    assert f"<|user|>wait, hold on {CUE_OVERLAP}<|end|><|assistant|><pause><|end|>" in seen


def test_carry_on_through_a_backchannel(policy) -> None:
    tl, spans = scenario([(2, 10, "How do I keep a plant alive?"), (16, 18, "mm hmm")], kind="backchannel")
    r = Forced(policy, [f" {ANSWER}<|end|>", " And water it when the top feels dry.<|end|>"])
    res = run(r, spans, tl)
    assert res.decisions[1]["outcome"] == "continue"
    speech = res.timeline.assistant.speech
    assert len(speech) == 1 and speech[0].start == 10 and speech[0].end > 20  # no gap at the back-channel
    assert res.timeline.action_at(16).label == "interrupt"  # the new words start while the user speaks
    assert res.text.endswith("when the top feels dry.")


def test_a_short_acknowledgement_is_a_backchannel(policy) -> None:
    tl, spans = scenario([(2, 10, "So I moved the plant to the window")])
    res = run(Forced(policy, [" Mm-hm.<|end|>"]), spans, tl)
    assert res.timeline.actions[0].label == "backchannel" and res.decisions[0]["outcome"] == "backchannel"
    assert is_backchannel("Okay.") and is_backchannel("mm hmm") and not is_backchannel("Okay, water it daily.")


def _check_tokens_match_outcomes(runner, res) -> None:
    for d in res.decisions:
        a, b = d["tokens"]
        ep = res.token_ids[a:b]
        assert ep[: d["wait_chunks"]] == [runner.pause_id] * d["wait_chunks"]
        rest = ep[d["wait_chunks"] :]
        if d["outcome"] in ("silent", "stop"):
            assert rest == [runner.end_id]  # doing nothing is the end token, right after the waits
        elif d["outcome"] != "listen":
            assert rest and rest[0] not in (runner.pause_id, runner.end_id) and d["text"]


def test_sampled_decisions_come_from_the_lm_and_the_decision_temperature(policy) -> None:
    tl, spans = scenario([(2, 10, "How do I keep a plant alive?"), (16, 22, "wait, hold on")])
    own = DuplexRunner(policy, DuplexSettings())  # the LM's own distribution: it never opens a turn with a wait
    for seed in range(4):
        res = run(own, spans, tl, seed)
        assert all(d["wait_chunks"] == 0 and d["outcome"] in ("respond", "continue") for d in res.decisions)
        _check_tokens_match_outcomes(own, res)
    hot = DuplexRunner(policy, DuplexSettings(decision_temperature=50.0, max_wait_chunks=3))
    seen: dict[str, int] = {}
    for seed in range(12):
        res = run(hot, spans, tl, seed)
        _check_tokens_match_outcomes(hot, res)
        for d in res.decisions:
            assert d["wait_chunks"] <= 3
            seen[d["outcome"]] = seen.get(d["outcome"], 0) + 1
            if d["situation"] == "turn" and d["outcome"] == "respond":
                assert res.timeline.action_at(d["chunk"] + d["wait_chunks"]).label in ("response", "backchannel")
        assert bool(res.timeline.assistant.speech) == bool(res.text)
    assert {"respond", "silent"} <= set(seen) and sum(seen.values()) > 12, seen
    greedy = DuplexRunner(policy, DuplexSettings(decision_temperature=50.0))
    res = greedy.run([], spans, tl, SamplingParams(temperature=0.0, max_new_tokens=40), 0)
    assert res.decisions[0]["wait_chunks"] == 0 and res.decisions[0]["outcome"] == "respond"  # greedy = the LM's argmax


def test_sessions_are_reproducible_per_seed_and_differ_across_seeds(policy) -> None:
    tl, spans = scenario([(2, 10, "How do I keep a plant alive?"), (16, 22, "wait, hold on")])
    runner = DuplexRunner(policy, DuplexSettings(decision_temperature=8.0))
    a, b = run(runner, spans, tl, seed=1), run(runner, spans, tl, seed=1)
    assert a.token_ids == b.token_ids and a.timeline.assistant.speech == b.timeline.assistant.speech
    others = {tuple(run(runner, spans, tl, seed=s).token_ids) for s in range(2, 6)}
    assert len(others | {tuple(a.token_ids)}) >= 4


def test_transcript_is_shared_over_spans_when_the_scenario_has_no_utterances() -> None:
    tl, _ = scenario([(2, 12, "How do I keep a plant"), (20, 22, "alive")])
    got = user_spans(tl)
    assert [(s.start, s.end) for s in got] == [(2, 12), (20, 22)]
    assert " ".join(s.text for s in got) == "How do I keep a plant alive" and all(s.text for s in got)
    tl3, _ = scenario([(2, 14, "How do I keep a plant alive?"), (30, 32, "mm hmm")])
    assert [s.text for s in user_spans(tl3)] == ["How do I keep a plant alive?", "mm hmm"]  # cut at the question mark
    tl2 = tl.model_copy(
        update={
            "meta": {
                "utterances": [
                    {"text": "How do I keep a plant", "start_s": 0.33, "end_s": 1.9},
                    {"text": "alive", "start_s": 3.2, "end_s": 3.5},
                ]
            }
        }
    )
    assert [s.text for s in user_spans(tl2)] == ["How do I keep a plant", "alive"]


def test_policies_without_the_decision_tokens_are_refused_clearly() -> None:
    class TextOnly:
        name, version = "x", "1"

    with pytest.raises(TypeError, match="local LM policy"):
        DuplexRunner(TextOnly())
