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
from dataclasses import dataclass
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
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise ValueError(
                f"snapshot rows lack column(s) {missing}; build the snapshot with "
                "`earmark dataset build` (schema v1) or add them to your Parquet"
            )
    end_id, stops, _ = policy_token_info(policy)
    cache: dict[str, list[int]] = {}
    pairs = []
    for r in rows:
        if label_sources is not None and r.get("label_source", "human") not in label_sources:
            continue
        raw = r["prompt_messages"]
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
                chosen=response_ids(r["chosen_ids"], end_id, stops, append_end),
                rejected=response_ids(r["rejected_ids"], end_id, stops, append_end),
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
                    r["prompt_messages"],
                    list(map(int, r["chosen_ids"])),
                    list(map(int, r["rejected_ids"])),
                ],
                separators=(",", ":"),
            ).encode()
        )
    return h.hexdigest()


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


def step_plan(n_pairs: int, batch_size: int, epochs: int, max_steps: int | None, seed: int) -> list[list[int]]:
    """Pair indices of every optimizer step: a fresh shuffle per epoch.

    Every step has exactly ``batch_size`` pairs: a short last batch is topped up from the start of
    the epoch's order, so no worker of a DDP group ever gets an empty share.
    """
    if n_pairs < 1:
        raise ValueError("no pairs to plan steps for")
    steps: list[list[int]] = []
    for epoch in range(epochs):
        order = list(range(n_pairs))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for i in range(0, n_pairs, batch_size):
            batch = order[i : i + batch_size]
            while len(batch) < batch_size:
                batch += order[: batch_size - len(batch)]
            steps.append(batch)
        if max_steps is not None and len(steps) >= max_steps:
            break
    return steps[:max_steps] if max_steps is not None else steps


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
