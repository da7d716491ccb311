"""Duplex mode for a local speech policy: per chunk it listens, speaks, back-channels or stops,
and every one of those decisions is a token the LM sampled, so preference training can move it.

How a session runs. The user channel is scripted (a scenario's speech spans on the 160 ms chunk
clock); the runner walks it and stops at what a duplex model can observe:

- the user went quiet while the assistant was not speaking: take the turn, or keep listening?
- the user started talking while the assistant was speaking: yield, or carry on?

At each such point the LM continues ONE growing token sequence in its own chat format: the user's
new words plus an observable cue arrive as a user turn, and the assistant turn that follows is
sampled. Its tokens are the decision:

    leading ``<pause>`` tokens   wait one chunk each before acting (the current behaviour goes on)
    then ``<|end|>``             act by doing nothing: stay silent (at a turn) or stop talking (spoken over)
    then a back-channel word     say "mm-hm" at that chunk (turn label ``backchannel``)
    then other text              speak it from that chunk on (when spoken over it replaces the rest of the turn)

A planned turn that the user pre-empts (they resume before the wait runs out) is dropped: the
assistant kept listening, which is what a mid-sentence pause asks for.

Why one sequence: the rollout row's ``token_ids`` are everything after the first prompt, so DPO's
``log p(token_ids | prompt)`` (pipelines/training) scores exactly the sequence the policy was
sampled on; per-decision prompts would score later decisions in a context the model never saw.
The user turns inside it are observations, not choices: their token ranges are recorded in
``timeline.meta["duplex"]["observation_spans"]`` so a trainer can mask them out of the loss.

The simulated clock ignores compute time (offline: the LM's latency is not part of the delay), and
the LM reads a transcript of each user stretch (the offline policy hears no audio) at its onset.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from earmark.domain.duplex import DEFAULT_CHUNK_MS, MAX_CHUNKS, Action, AudioTrack, Timeline, spans_from_mask
from pipelines.policy.base import GeneratedSample, Message, SamplingParams
from pipelines.policy.offline.markup import CHAT_TOKENS, END, PAD, PAUSE, parse_markup, render_chat, strip_controls

# Cues are things a duplex model observes, never the scenario's labels: whether a silence is a
# mid-sentence pause or the end of a turn is for the model to tell from the words.
CUE_QUIET = "(then silence)"
CUE_OVERLAP = "(said while you were speaking)"
# Short acknowledgements that count as a back-channel rather than taking the turn.
BACKCHANNEL_WORDS = frozenset(
    {
        "mm",
        "mmm",
        "hm",
        "hmm",
        "mhm",
        "uh",
        "huh",
        "mm-hm",
        "mm-hmm",
        "uh-huh",
        "yeah",
        "yes",
        "okay",
        "ok",
        "right",
        "sure",
        "i",
        "see",
        "got",
        "it",
        "ah",
        "oh",
    }
)
MAX_BACKCHANNEL_WORDS = 3
_WORD_RE = re.compile(r"[a-z]+(?:-[a-z]+)*")
# A byte-level BPE can sample any byte; C0 controls are not speech and the store refuses them.
_CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffd]")


@dataclass(frozen=True)
class DuplexSettings:
    """Duplex decoding settings; recorded on every rollout row beside the sampling parameters.

    While a decision is sampled (before the first spoken token) the LM's next-token distribution
    is read as three classes, wait (``<pause>``), act by doing nothing (``<|end|>``) and start
    speaking (any other token), and the class is drawn from their probabilities raised to
    ``1 / decision_temperature``; a speaking token is then drawn from the LM within its class. At
    1.0 this is exactly the LM's own distribution. A policy trained only on dialogues gives wait and
    end ~1e-7 each at the start of a turn (measured on v0), so all K samples would make the same decision and no
    preference between decisions could be observed; a hotter decision keeps the order of the LM's
    preferences (and so follows whatever training does to them) while exploring the others.
    """

    chunk_ms: int = DEFAULT_CHUNK_MS
    max_wait_chunks: int = 12  # longest wait one decision can ask for (12 x 160 ms ~ 1.9 s)
    decision_temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.max_wait_chunks < 0:
            raise ValueError(f"max_wait_chunks must be >= 0, got {self.max_wait_chunks}")
        if not (math.isfinite(self.decision_temperature) and self.decision_temperature > 0):
            raise ValueError(
                f"decision_temperature must be a positive number, got {self.decision_temperature}; "
                "1.0 samples the LM's own decisions"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UserSpan:
    """One stretch of user speech: chunks [start, end) and what was said."""

    start: int
    end: int
    text: str


@dataclass
class Utterance:
    start: int
    end: int  # exclusive; lowered when the assistant stops or is replaced
    markup: str
    text: str
    audio: np.ndarray
    planned_end: int


@dataclass
class DuplexResult:
    """A finished session: the timeline (assistant track without its blob id yet), the assistant's
    session-aligned audio, and the token sequence that produced it."""

    timeline: Timeline
    audio: np.ndarray
    sample_rate: int
    token_ids: list[int]
    text: str
    context: list[Message]  # the conversation the first decision was prompted with (the rollout's prompt)
    decisions: list[dict[str, Any]]
    seconds: float = 0.0  # wall time of the whole session (sampling and rendering)
    first_decision_s: float = 0.0  # wall time until the first decision was sampled and rendered

    def as_sample(self, settings: DuplexSettings, policy_tag: str) -> GeneratedSample:
        """The session as one rollout sample (``pipelines.rollouts.store`` writes it)."""
        markup = [d["markup"] for d in self.decisions]
        return GeneratedSample(
            text=self.text,
            messages=[{"role": "assistant", "content": self.text}],
            token_ids=list(self.token_ids),
            audio=self.audio,
            sample_rate=self.sample_rate,
            ttfa_s=self.first_decision_s,
            total_s=self.seconds,
            extra={
                "duplex_context": self.context,
                "timeline": self.timeline.to_json(),
                "markup": " | ".join(markup),
                "sampling_extra": {"duplex": settings.as_dict()},
                "policy": policy_tag,
            },
        )


def is_backchannel(text: str) -> bool:
    words = _WORD_RE.findall(text.lower())
    return 0 < len(words) <= MAX_BACKCHANNEL_WORDS and all(w in BACKCHANNEL_WORDS for w in words)


def merge_adjacent(spans: list[UserSpan]) -> list[UserSpan]:
    """Spans that touch are one stretch of speech (no silence for the model to react to)."""
    out: list[UserSpan] = []
    for s in sorted(spans, key=lambda x: x.start):
        if out and s.start <= out[-1].end:
            last = out[-1]
            out[-1] = UserSpan(last.start, max(last.end, s.end), f"{last.text} {s.text}".strip())
        else:
            out.append(s)
    return out


class DuplexRunner:
    """Runs duplex sessions with a local LM policy that has the offline policy's ``<pause>`` token.

    The offline speech policy (or a checkpoint fine-tuned from it) is the default; a policy needs
    ``model``, ``tokenizer`` and ``prompt_ids`` (every local adapter here has them) and the chat and
    ``<pause>`` tokens, because the decisions are read from those tokens.
    """

    def __init__(self, policy: Any, settings: DuplexSettings | None = None) -> None:
        missing = [a for a in ("model", "tokenizer", "prompt_ids") if not hasattr(policy, a)]
        if missing:
            raise TypeError(
                f"duplex mode needs a local LM policy (lacks {missing}); use the offline speech policy "
                "(kind 'offline') or a checkpoint fine-tuned from it"
            )
        tok = policy.tokenizer
        ids = {t: tok.convert_tokens_to_ids(t) for t in [*CHAT_TOKENS, PAUSE]}
        absent = [t for t, i in ids.items() if i is None or i == tok.unk_token_id]
        if absent:
            raise ValueError(
                f"the policy's tokenizer lacks {absent}; duplex decisions are read from these tokens, so "
                "use the offline speech policy or a checkpoint fine-tuned from it"
            )
        self.policy = policy
        self.settings = settings or DuplexSettings()
        self.pause_id, self.end_id, self.pad_id = ids[PAUSE], ids[END], ids[PAD]
        self.stop_ids = {ids[t] for t in CHAT_TOKENS}
        self.limit = int(getattr(policy.model.config, "max_position_embeddings", 512))
        self.voice = getattr(policy, "voice", None)

    # -- one session ---------------------------------------------------------------------------
    def run(
        self, head: list[Message], spans: list[UserSpan], scenario: Timeline, params: SamplingParams, seed: int
    ) -> DuplexResult:
        """Step through the user's speech; ``head`` is the system message (persona), if any."""
        from pipelines.speech.espeak import sample_rate

        if not spans:
            raise ValueError("the scenario's user track has no speech spans; a duplex session needs the user to speak")
        if scenario.chunk_ms != self.settings.chunk_ms:
            raise ValueError(
                f"scenario clock is {scenario.chunk_ms} ms but the runner's is {self.settings.chunk_ms} ms; "
                "build DuplexSettings(chunk_ms=scenario.chunk_ms)"
            )
        t0 = time.perf_counter()
        s = _Session(self, head, params, seed, sample_rate())
        spans = merge_adjacent(spans)
        for sp in spans:
            s.pending.append(sp.text)
            cur = s.current
            if cur is not None and cur.start < sp.start < cur.end:
                s.decide(sp.start, "overlap")
            elif cur is not None and cur.start >= sp.start:
                s.cancel(sp.start)  # the user resumed before the planned turn began: it kept listening
            cur = s.current
            if not (cur is not None and cur.start < sp.end < cur.end):
                s.decide(sp.end, "turn")
            if s.first_s is None:
                s.first_s = time.perf_counter() - t0
        return s.finish(scenario, time.perf_counter() - t0)

    # -- one decision ----------------------------------------------------------------------------
    def _sample(self, context: list[int], params: SamplingParams, seed: int, index: int) -> list[int]:
        """Sample one assistant turn after ``context``: the decision prefix token by token (at the
        decision temperature), then the spoken words with the shared batched sampler."""
        import torch

        from pipelines.policy.sampling import row_seed, sample_batch

        st = self.settings
        ctx = list(context)[-(self.limit - params.max_new_tokens) :]
        gen = torch.Generator().manual_seed(row_seed(seed, 2 * index))
        out: list[int] = []
        with torch.inference_mode():
            while True:
                logits = self.policy.model(input_ids=torch.tensor([ctx + out])).logits[0, -1].float()
                if len(out) >= st.max_wait_chunks:
                    logits[self.pause_id] = float("-inf")  # the wait is capped: act now or stay silent
                if params.temperature <= 0:
                    tok = int(logits.argmax())
                else:
                    tok = self._decision_token(logits / params.temperature, gen)
                out.append(tok)
                if tok != self.pause_id or len(out) >= params.max_new_tokens:
                    break
        budget = params.max_new_tokens - len(out)
        if out[-1] in self.stop_ids or out[-1] == self.pause_id or budget < 1:
            return out
        rest = sample_batch(
            self.policy.model,
            [ctx + out],
            replace(params, max_new_tokens=budget),
            [row_seed(seed, 2 * index + 1)],
            self.stop_ids,
            self.pad_id,
        )[0]
        return out + rest.token_ids

    def _decision_token(self, logits, gen):  # noqa: ANN001, ANN202 - torch tensors
        """Draw wait / end / speak from the LM's class probabilities at the decision temperature,
        then (for speak) a token from the LM within that class."""
        import torch

        lp = logits.log_softmax(-1)
        speak = lp.clone()
        speak[self.pause_id] = speak[self.end_id] = float("-inf")
        classes = torch.stack([lp[self.pause_id], lp[self.end_id], torch.logsumexp(speak, -1)])
        pick = int(torch.multinomial((classes / self.settings.decision_temperature).softmax(-1), 1, generator=gen))
        if pick < 2:
            return self.pause_id if pick == 0 else self.end_id
        return int(torch.multinomial(speak.softmax(-1), 1, generator=gen))


class _Session:
    """State of one running session (the token sequence, the placed utterances, the decision log)."""

    def __init__(self, runner: DuplexRunner, head: list[Message], params: SamplingParams, seed: int, sr: int) -> None:
        self.r, self.head, self.params, self.seed, self.sr = runner, [dict(m) for m in head], params, seed, sr
        self.chunk_samples = int(round(sr * runner.settings.chunk_ms / 1000))
        self.prompt: list[int] | None = None
        self.context: list[Message] = []
        self.tokens: list[int] = []  # everything after the prompt: decisions, speech and observed user turns
        self.observations: list[list[int]] = []
        self.pending: list[str] = []
        self.utterances: list[Utterance] = []
        self.current: Utterance | None = None
        self.decisions: list[dict[str, Any]] = []
        self.stops: list[int] = []
        self.first_s: float | None = None

    # -- decisions -------------------------------------------------------------------------------
    def decide(self, chunk: int, situation: str) -> None:
        cue = CUE_OVERLAP if situation == "overlap" else CUE_QUIET
        words = " ".join(t for t in self.pending if t).strip()
        self.pending.clear()
        start = self._observe(f"{words} {cue}".strip())
        assert self.prompt is not None, "decide() before the session's prompt was set"
        episode = self.r._sample(self.prompt + self.tokens, self.params, self.seed, len(self.decisions))
        self.tokens.extend(episode)
        wait = 0
        while wait < len(episode) and episode[wait] == self.r.pause_id:
            wait += 1
        spoken = self._markup(episode[wait:])
        text = strip_controls(spoken)
        at = chunk + wait
        if situation == "overlap":
            cur = self.current
            assert cur is not None
            if cur.end > at:
                cur.end = at  # stopped, or handed over to the new words below
                if not text:
                    self.stops.append(at)
            outcome = "continue" if text else "stop"
        else:
            outcome = ("backchannel" if is_backchannel(text) else "respond") if text else "silent"
        if text:
            self._place(at, spoken, text)
        self.decisions.append(
            {
                "chunk": chunk,
                "situation": situation,
                "heard": words,
                "wait_chunks": wait,
                "outcome": outcome,
                "text": text,
                "markup": self._markup(episode),
                "tokens": [len(self.tokens) - len(episode), len(self.tokens)],
                "observation": start,
            }
        )

    def cancel(self, chunk: int) -> None:
        cur = self.current
        assert cur is not None
        self.utterances.remove(cur)
        self.current = None
        if self.decisions:
            self.decisions[-1]["outcome"] = "listen"  # pre-empted: nothing was said
            self.decisions[-1]["preempted_at"] = chunk

    def _observe(self, user_text: str) -> list[int] | None:
        """Append the user's turn: the prompt the first time, an observation in the sequence after."""
        turn = {"role": "user", "content": user_text}
        if self.prompt is None:
            self.context = [*self.head, turn]
            self.prompt = list(self.r.policy.prompt_ids(self.context, self.params.max_new_tokens))
            return None
        start = len(self.tokens)
        if not self.tokens or self.tokens[-1] != self.r.end_id:
            self.tokens.append(self.r.end_id)  # the last turn ran out of tokens: close it
        self.tokens.extend(self.r.policy.tokenizer(render_chat([turn]), add_special_tokens=False)["input_ids"])
        self.observations.append([start, len(self.tokens)])
        return [start, len(self.tokens)]

    def _markup(self, ids: list[int]) -> str:
        keep = [i for i in ids if i not in self.r.stop_ids]
        return (
            _CONTROL_CHARS_RE.sub("", self.r.policy.tokenizer.decode(keep, skip_special_tokens=False)) if keep else ""
        )

    def _place(self, at: int, markup: str, text: str) -> None:
        from pipelines.speech.espeak import DEFAULT_VOICE, render_segments

        audio, sr = render_segments(parse_markup(markup), voice=self.r.voice or DEFAULT_VOICE)
        if sr != self.sr:
            raise RuntimeError(f"eSpeak rendered at {sr} Hz but the session runs at {self.sr} Hz")
        n = max(1, math.ceil(audio.size / self.chunk_samples))
        u = Utterance(at, at + n, markup, text, audio, at + n)
        self.utterances.append(u)
        self.current = u

    # -- the timeline ----------------------------------------------------------------------------
    def finish(self, scenario: Timeline, seconds: float) -> DuplexResult:
        placed = [u for u in self.utterances if u.end > u.start]
        n = max([scenario.n_chunks, *(u.end for u in placed)])
        if n > MAX_CHUNKS:
            raise ValueError(f"the session runs {n} chunks, past the limit of {MAX_CHUNKS}; lower max_new_tokens")
        cs = self.chunk_samples
        track = np.zeros(n * cs, dtype=np.float32)
        mask = [False] * n
        actions: dict[int, Action] = {}
        for u in placed:
            clip = u.audio[: (u.end - u.start) * cs]  # cut where the assistant stopped or was replaced
            track[u.start * cs : u.start * cs + clip.size] = clip
            for c in range(u.start, u.end):
                mask[c] = True
            label = (
                "backchannel"
                if is_backchannel(u.text)
                else "interrupt"
                if scenario.user.speaking(u.start)
                else "response"
            )
            cut = (
                "" if u.end == u.planned_end else f" (cut after {u.end - u.start} of {u.planned_end - u.start} chunks)"
            )
            actions[u.start] = Action(chunk=u.start, label=label, plan=f"say: {u.text}{cut}"[:2000])
        for c in self.stops:
            if c < n and c not in actions:
                actions[c] = Action(chunk=c, plan="stop: yield the turn to the user")
        text = " ".join(u.text for u in placed).strip()
        meta = {
            **scenario.meta,
            "duplex": {
                "decisions": self.decisions,
                "observation_spans": self.observations,
                "settings": self.r.settings.as_dict(),
                "seed": self.seed,
            },
        }
        timeline = Timeline(
            chunk_ms=scenario.chunk_ms,
            n_chunks=n,
            user=scenario.user,
            assistant=AudioTrack(transcript=text[:20000], speech=spans_from_mask(mask)),
            actions=[actions[c] for c in sorted(actions)],
            events=scenario.events,
            scenario=scenario.scenario,
            meta=meta,
        )
        return DuplexResult(
            timeline,
            track,
            self.sr,
            list(self.tokens),
            text,
            self.context,
            self.decisions,
            seconds,
            self.first_s or seconds,
        )
