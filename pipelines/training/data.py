"""Snapshot rows -> token-id preference pairs, and the step plan every worker derives the same way.

A snapshot row (``earmark.services.datasets``) carries the prompt as chat messages and both
responses as the token ids the policy generated, so training never re-tokenizes rendered audio:
only the prompt is tokenized, with the policy's own ``prompt_ids``.

The plan (which pairs form optimizer step s) is a pure function of (pair count, batch size,
epochs, seed): a worker restarted from a checkpoint at step s recomputes it and skips to s, so
no data-loader state needs checkpointing.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

REQUIRED_COLUMNS = ("row_id", "prompt_messages", "chosen_ids", "rejected_ids")


@dataclass(frozen=True)
class PreferencePair:
    row_id: str
    prompt: list[int]
    chosen: list[int]
    rejected: list[int]
    weight: float = 1.0
    margin: float = 1.0  # label confidence in (0, 1]
    label_source: str = "human"
    group: str = ""  # pairs of one prompt share a group (held-out splits never cut a prompt)
    # Response token spans [start, end) that the policy observed rather than chose (a duplex
    # session's user turns inside one growing sequence): context for the tokens after them, but
    # not scored, so the loss moves only the policy's own decisions.
    chosen_observed: tuple[tuple[int, int], ...] = ()
    rejected_observed: tuple[tuple[int, int], ...] = ()

    def chosen_row(self) -> tuple[list[int], list[int], tuple[tuple[int, int], ...]]:
        return self.prompt, self.chosen, self.chosen_observed

    def rejected_row(self) -> tuple[list[int], list[int], tuple[tuple[int, int], ...]]:
        return self.prompt, self.rejected, self.rejected_observed

    @property
    def tokens(self) -> int:
        return 2 * len(self.prompt) + len(self.chosen) + len(self.rejected)


def response_ids(
    ids: Sequence[int], end_id: int | None, stop_ids: Iterable[int] = (), append_end: bool = True
) -> list[int]:
    """The response as trained: generated ids without trailing stop tokens, then the end token.

    The offline policy ends every finished turn with ``<|end|>`` (it is in its training labels and
    sampling stops on it), so the end token is part of what a preference teaches: where to stop.
    Snapshots may store the ids with or without it; both give the same training sequence.
    """
    out = [int(t) for t in ids]
    stops = set(stop_ids) | ({end_id} if end_id is not None else set())
    while out and out[-1] in stops:
        out.pop()
    if append_end and end_id is not None:
        out.append(int(end_id))
    return out


def policy_token_info(policy: Any) -> tuple[int | None, set[int], int]:
    """(end id, stop ids, pad id) of a local policy with a tokenizer.

    The offline policy's chat tokens come from its markup module; any other tokenizer falls back
    to its EOS and pad tokens.
    """
    from pipelines.policy.offline.markup import CHAT_TOKENS, END, PAD

    tok = policy.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in CHAT_TOKENS}
    if all(i is not None and i != tok.unk_token_id for i in ids.values()):
        return ids[END], set(ids.values()), ids[PAD]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    return eos, ({eos} if eos is not None else set()), int(pad if pad is not None else (eos or 0))


def pairs_from_rows(
    rows: Sequence[dict[str, Any]], policy: Any, *, append_end: bool = True, label_sources: Sequence[str] | None = None
) -> list[PreferencePair]:
    """Turn snapshot rows into pairs; prompts are tokenized once per distinct conversation."""
    if rows:
        have = set(rows[0])
        text = "chosen_ids" not in have and {"chosen", "rejected"} <= have
        need = ("row_id", "prompt_messages", "chosen", "rejected") if text else REQUIRED_COLUMNS
        missing = [c for c in need if c not in have and not (c == "prompt_messages" and "prompt" in have)]
        if missing:
            raise ValueError(
                f"snapshot rows lack column(s) {missing}; build the snapshot with `earmark dataset build` "
                "(schema v1: token ids) or give text pairs as row_id, prompt (or prompt_messages), chosen, rejected"
            )
    end_id, stops, _ = policy_token_info(policy)
    cache: dict[str, list[int]] = {}
    pairs = []
    for r in rows:
        if label_sources is not None and r.get("label_source", "human") not in label_sources:
            continue
        raw = r["prompt_messages"] if "prompt_messages" in r else r["prompt"]
        if isinstance(raw, str) and not raw.lstrip().startswith("["):
            raw = [{"role": "user", "content": raw}]  # a plain-text prompt is one user turn
        key = raw if isinstance(raw, str) else json.dumps(raw)
        if key not in cache:
            cache[key] = policy.prompt_ids(json.loads(key))
        weight = float(r.get("weight") or 1.0)
        if weight <= 0:
            raise ValueError(f"row {r['row_id']}: weight must be > 0, got {weight}; drop the row instead")
        margin = float(r.get("margin") if r.get("margin") is not None else 1.0)
        pairs.append(
            PreferencePair(
                row_id=str(r["row_id"]),
                prompt=cache[key],
                chosen=response_ids(_response(r, "chosen", policy), end_id, stops, append_end),
                rejected=response_ids(_response(r, "rejected", policy), end_id, stops, append_end),
                weight=weight,
                margin=margin,
                label_source=str(r.get("label_source", "human")),
                chosen_observed=observed_spans(r.get("chosen_timeline")),
                rejected_observed=observed_spans(r.get("rejected_timeline")),
                # stable across stores (ids are not): the held-out split must not depend on insertion order
                group=str(r.get("prompt_external_id") or hashlib.sha1(key.encode()).hexdigest()[:12]),
            )
        )
    if not pairs:
        raise ValueError("no preference pairs to train on; check the snapshot and the label_sources filter")
    return pairs


def _response(row: dict[str, Any], side: str, policy: Any) -> list[int]:
    """A response's token ids: as stored (``chosen_ids``: what the policy generated, audio tokens
    included) or, for text pairs, the text tokenized as the chat template renders an assistant
    turn's content (no special tokens; the end-of-turn token is appended by ``response_ids``)."""
    ids = row.get(f"{side}_ids")
    if ids is not None:
        return list(ids)
    value = row[side]
    if isinstance(value, list):  # chat form: [{"role": "assistant", "content": ...}]
        value = " ".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    if not isinstance(value, str) or not value:
        raise ValueError(f"row {row.get('row_id')}: {side} must be non-empty text or {side}_ids")
    return list(policy.tokenizer(value, add_special_tokens=False)["input_ids"])


def observed_spans(timeline: Any) -> tuple[tuple[int, int], ...]:
    """Token spans of a rollout's response that were observations (duplex user turns), from its
    timeline (``meta.duplex.observation_spans``, as written by pipelines.duplex.policy); () if none."""
    if isinstance(timeline, str):
        timeline = json.loads(timeline) if timeline else None
    spans = ((timeline or {}).get("meta") or {}).get("duplex", {}).get("observation_spans") or []
    out = []
    for s in spans:
        a, b = int(s[0]), int(s[1])
        if not 0 <= a <= b:
            raise ValueError(f"observation span {s!r} is not a [start, end) token range; rebuild the snapshot")
        out.append((a, b))
    return tuple(out)


def rows_sha256(rows: Sequence[dict[str, Any]]) -> str:
    """Content hash of the columns training reads (for snapshots that are not in the store)."""
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda x: str(x["row_id"])):
        h.update(
            json.dumps(
                [
                    str(r["row_id"]),
                    r["prompt_messages"] if "prompt_messages" in r else r["prompt"],
                    _hashable(r, "chosen"),
                    _hashable(r, "rejected"),
                ],
                separators=(",", ":"),
            ).encode()
        )
    return h.hexdigest()


def _hashable(r: dict[str, Any], side: str) -> Any:
    ids = r.get(f"{side}_ids")
    return list(map(int, ids)) if ids is not None else r[side]


def split_heldout(
    pairs: list[PreferencePair], fraction: float, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out whole prompt groups (never half a prompt), deterministically from the seed."""
    if fraction <= 0:
        return pairs, []
    groups = sorted({p.group for p in pairs})
    rng = random.Random(seed)
    rng.shuffle(groups)
    n = max(1, round(len(groups) * fraction))
    if n >= len(groups):
        raise ValueError(f"eval_fraction={fraction} holds out all {len(groups)} prompts; lower it or add prompts")
    held = set(groups[:n])
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]


def step_plan(
    n_pairs: int, batch_size: int, epochs: int, max_steps: int | None, seed: int, min_batch: int = 1
) -> list[list[int]]:
    """Pair indices of every optimizer step: a fresh shuffle per epoch, no pair twice in an epoch.

    The last step of an epoch is short when ``batch_size`` does not divide the pairs (the loss is
    the mean over the step's own pairs, so a short step is not over-weighted). A remainder smaller
    than ``min_batch`` (DDP workers x micro-batches: every rank needs a share) is dropped.
    """
    if n_pairs < 1:
        raise ValueError("no pairs to plan steps for")
    if n_pairs < min_batch:
        raise ValueError(
            f"{n_pairs} pair(s) cannot feed {min_batch} worker micro-batches; add pairs or lower num_workers/grad_accum"
        )
    steps: list[list[int]] = []
    for epoch in range(epochs):
        order = list(range(n_pairs))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for i in range(0, n_pairs, batch_size):
            batch = order[i : i + batch_size]
            if len(batch) >= min_batch:
                steps.append(batch)
        if max_steps is not None and len(steps) >= max_steps:
            break
    return steps[:max_steps] if max_steps is not None else steps


def truncate_pair(
    pair: PreferencePair, max_length: int | None, max_prompt_length: int | None, mode: str = "keep_start"
) -> PreferencePair:
    """Apply TRL-style truncation to a pair (both sequences keep one shared prompt).

    ``max_prompt_length`` keeps the prompt's last tokens. Then, when prompt + the longer response
    exceeds ``max_length``: ``keep_start`` drops the ends of the responses (TRL's default),
    ``keep_end`` drops the oldest prompt tokens (a response is cut only if it alone is too long).
    """
    prompt = pair.prompt[-max_prompt_length:] if max_prompt_length else pair.prompt
    chosen, rejected = pair.chosen, pair.rejected
    if max_length and len(prompt) + max(len(chosen), len(rejected)) > max_length:
        if mode == "keep_start":
            if len(prompt) >= max_length:
                raise ValueError(
                    f"pair {pair.row_id}: the prompt alone has {len(prompt)} tokens, over max_length={max_length}; "
                    "set max_prompt_length or truncation_mode=keep_end"
                )
            room = max_length - len(prompt)
            chosen, rejected = chosen[:room], rejected[:room]
        else:
            chosen, rejected = chosen[: max_length - 1], rejected[: max_length - 1]
            keep = max_length - max(len(chosen), len(rejected))
            prompt = prompt[-keep:]
    if (prompt, chosen, rejected) == (pair.prompt, pair.chosen, pair.rejected):
        return pair
    return replace(pair, prompt=list(prompt), chosen=list(chosen), rejected=list(rejected))


def shard_step(indices: list[int], rank: int, world: int, grad_accum: int) -> list[list[int]]:
    """This rank's micro-batches of one step (strided, so every rank gets a similar share)."""
    mine = indices[rank::world]
    if len(mine) < grad_accum:
        raise ValueError(
            f"a step of {len(indices)} pairs cannot feed {world} worker(s) x {grad_accum} micro-batches; "
            "raise batch_size or lower num_workers/grad_accum"
        )
    size = -(-len(mine) // grad_accum)
    return [mine[i : i + size] for i in range(0, len(mine), size)]
