"""Generate rollouts with any `Policy` and store them exactly once. Ray actors call this; so do the
bare single-process loop and the tests, so there is one code path to trust.

A work item is one (prompt, sample_index) trajectory. Multi-turn prompts (several user turns with no
scripted assistant reply between them) are answered turn by turn, each turn given the history. The
rollout row's ``text``/``token_ids``/audio are the final assistant turn (what raters compare and
trainers score); every generated turn stays in ``messages`` with its own audio blob and token ids.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from earmark.domain.messages import content_text
from earmark.domain.persona_text import with_persona
from earmark.domain.records import RolloutCreate
from pipelines.duplex import rollouts as duplex_rollouts
from pipelines.work_items import Result, WorkItem, derive_seed

__all__ = [
    "Result",
    "WorkItem",
    "derive_seed",
    "for_policy",
    "generate",
    "prompt_conversation",
    "rollout_rows",
    "store",
]

if TYPE_CHECKING:
    from earmark.api import Earmark
    from pipelines.policy.base import GeneratedSample, Policy, SamplingParams


def prompt_conversation(messages: list[dict[str, Any]], persona_card: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The prompt's messages with the persona card as the system message (unless one is given)."""
    return with_persona(messages, persona_card)


def for_policy(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Policies get plain-text content: audio parts contribute their transcript."""
    return [{**m, "content": content_text(m.get("content", ""))} for m in messages]


def _script(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split a conversation into segments, each ending in a user turn that needs a generated reply."""
    segments, cur = [], []
    for i, m in enumerate(messages):
        cur.append(m)
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if m["role"] == "user" and (nxt is None or nxt["role"] == "user"):
            segments.append(cur)
            cur = []
    if cur and segments:
        segments[-1].extend(cur)  # trailing non-user messages (rare) ride with the last segment
    return segments or [messages]


def generate(
    policy: Policy,
    items: list[WorkItem],
    params: SamplingParams,
    *,
    job_seed: int = 0,
    round: int = 0,
    duplex: dict[str, Any] | None = None,
) -> list[Result]:
    """Run every trajectory turn by turn, batching the same turn across items in one policy call.

    The batch seed derives from the job seed, the round and the batch's first item, so re-running the
    same plan draws the same samples.
    """
    if not items:
        return []
    sessions = [it for it in items if it.regime == "duplex"]
    if sessions:
        rest = [it for it in items if it.regime != "duplex"]
        done = duplex_rollouts.generate(policy, sessions, params, job_seed=job_seed, round=round, overrides=duplex)
        return done + (generate(policy, rest, params, job_seed=job_seed, round=round) if rest else [])
    scripts = [_script(it.messages) for it in items]
    histories: list[list[dict[str, Any]]] = [[] for _ in items]
    samples: list[list[GeneratedSample]] = [[] for _ in items]
    seed0 = derive_seed(job_seed, round, items[0].prompt_id, items[0].sample_index, 0)
    for turn in range(max(len(s) for s in scripts)):
        active = [i for i, s in enumerate(scripts) if turn < len(s)]
        for i in active:
            histories[i].extend(scripts[i][turn])
        # Items with the same history (the K samples of one prompt) must get different samples:
        # ask once per distinct history for as many samples as items share it.
        groups: dict[str, list[int]] = {}
        for i in active:
            groups.setdefault(json.dumps(histories[i], sort_keys=True, default=str), []).append(i)
        keys = list(groups)
        n = max(len(g) for g in groups.values())
        outs = policy.generate(
            [for_policy(histories[groups[k][0]]) for k in keys], params, num_samples=n, seed=seed0 + turn
        )
        for k, out in zip(keys, outs, strict=True):
            for j, i in enumerate(groups[k]):
                samples[i].append(out[j])
                histories[i].append({"role": "assistant", "content": out[j].text})
    return [(items[i], samples[i], seed0) for i in range(len(items))]


def _reply_message(em: Earmark, out: GeneratedSample, vocab: str | None) -> tuple[dict[str, Any], Any]:
    content: list[dict[str, Any]] = [{"type": "text", "text": out.text}]
    blob = None
    if out.audio is not None and out.sample_rate and np.asarray(out.audio).size:
        blob = em.blobs.put_waveform(np.asarray(out.audio, dtype=np.float32), int(out.sample_rate))
        content.append({"type": "audio", "audio_sha256": blob.sha256, "transcript": out.text})
    content.append({"type": "token", "ids": [int(t) for t in out.token_ids], **({"vocab": vocab} if vocab else {})})
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if out.extra.get("tool_calls"):
        msg["tool_calls"] = out.extra["tool_calls"]
    return msg, blob


def store(
    em: Earmark, policy_id: int, round: int, params: SamplingParams, results: list[Result], vocab: str | None = None
) -> dict[tuple[int, int, int, int], int]:
    """Audio to the blob store first, then every row in one bulk, idempotent transaction."""
    return em.rollouts.ingest(rollout_rows(em, policy_id, round, params, results, vocab))


def rollout_rows(
    em: Earmark, policy_id: int, round: int, params: SamplingParams, results: list[Result], vocab: str | None = None
) -> list[RolloutCreate]:
    """The rows of ``results``, their audio already in the blob store (content-addressed, so
    storing a clip twice keeps one copy); ``em.rollouts.ingest`` writes them."""
    rows = []
    for item, turns, seed in results:
        messages: list[dict[str, Any]] = []
        blob = None
        last = turns[-1]
        timeline = None
        if "duplex_context" in last.extra:
            # A duplex session: one sample whose context is what its first decision was prompted
            # with (the snapshot's prompt, so DPO scores the very sequence that was sampled) and
            # whose audio is the assistant's session-aligned track (mono, so every audio scorer reads
            # it; the stereo mix with the user track is rendered on demand from the two blobs).
            messages.extend(last.extra["duplex_context"])
            reply, blob = _reply_message(em, last, vocab)
            messages.append(reply)
            timeline = dict(last.extra["timeline"])
            if blob is not None:
                timeline["assistant"] = {**timeline.get("assistant", {}), "audio_sha256": blob.sha256}
        else:
            for segment, out in zip(_script(item.messages), turns, strict=True):
                messages.extend(segment)
                reply, blob = _reply_message(em, out, vocab)
                messages.append(reply)
        rows.append(
            RolloutCreate(
                prompt_id=item.prompt_id,
                policy_id=policy_id,
                round=round,
                sample_index=item.sample_index,
                messages=messages,
                text=last.text,
                token_ids=[int(t) for t in last.token_ids],
                audio_sha256=blob.sha256 if blob else None,
                duration_s=blob.duration_s if blob else None,
                ttfa_s=last.ttfa_s,
                total_s=last.total_s,
                sampling={**params.as_dict(), **last.extra.get("sampling_extra", {})},
                seed=seed,
                tool_calls=last.extra.get("tool_calls"),
                timeline=timeline,
            )
        )
    return rows
