"""Batched sampling and scoring for local causal LMs, shared by the offline and HF policies.

Why not ``model.generate``: it draws from torch's global RNG, so a sample depends on what else
was in the batch and on whoever touched the RNG before. Here every row has its own generator
seeded from (seed, sample index), so a rollout is reproducible from the values recorded on its
row, and a callback sees each token as it is produced (the offline policy renders its first
speech segment from there to measure time to first audio honestly).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipelines.policy.base import SamplingParams

TokenCallback = Callable[[int, int], None]  # (row, token_id), called right after sampling
MAX_SEED = 2**63 - 1


def row_seed(seed: int, sample_index: int) -> int:
    """Seed for the ``sample_index``-th sample of a request; independent of batch layout."""
    return int(
        np.random.SeedSequence([int(seed) & MAX_SEED, int(sample_index)]).generate_state(2, np.uint64)[0] & MAX_SEED
    )


@dataclass
class RowResult:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop id was produced, and is included) or "length"


def _context_limit(model) -> int | None:
    limit = getattr(model.config, "max_position_embeddings", None)
    return int(limit) if limit else None


def _forward_kwargs(model) -> tuple[str, bool]:
    """(name of the KV-cache argument, whether ``logits_to_keep`` exists): transformers 5 renamed
    ``past_key_values`` to ``cache``; older releases and custom models use the old name."""
    params = inspect.signature(model.forward).parameters
    return ("cache" if "cache" in params else "past_key_values"), "logits_to_keep" in params


def _cache_of(result):
    cache = getattr(result, "cache", None)
    return cache if cache is not None else getattr(result, "past_key_values", None)


def _filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, top-k and top-p on a [B, V] tensor (HF semantics)."""
    logits = logits / max(params.temperature, 1e-5)
    if params.top_k and params.top_k > 0:
        k = min(params.top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0.0 < params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) > params.top_p  # keep the token that crosses top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


def _repetition_penalty(logits: torch.Tensor, seen: list[torch.Tensor], penalty: float) -> torch.Tensor:
    for r, ids in enumerate(seen):
        vals = logits[r, ids]
        logits[r, ids] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return logits


@torch.inference_mode()
def sample_batch(
    model,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    seeds: Sequence[int],
    stop_ids: set[int],
    pad_id: int,
    on_token: TokenCallback | None = None,
) -> list[RowResult]:
    """Sample one continuation per prompt with a KV cache; rows stop independently."""
    if len(prompts) != len(seeds):
        raise ValueError(f"need one seed per prompt, got {len(seeds)} seeds for {len(prompts)} prompts")
    if params.max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    limit = _context_limit(model)
    keep = (limit - params.max_new_tokens) if limit else None
    if keep is not None and keep < 1:
        raise ValueError(
            f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in a {limit}-token context"
        )
    rows = [list(p)[-keep:] if keep else list(p) for p in prompts]
    if any(not r for r in rows):
        raise ValueError("empty prompt: every conversation needs at least one token of input")
    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):  # left padding keeps every row's last token in the last column
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    seen = [torch.tensor(sorted(set(r)), dtype=torch.long, device=device) for r in rows]
    out: list[list[int]] = [[] for _ in rows]
    done = [False] * len(rows)

    cache_kw, has_keep = _forward_kwargs(model)
    extra = {"logits_to_keep": 1} if has_keep else {}
    result = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
    past, logits = _cache_of(result), result.logits[:, -1, :].float()
    next_pos = positions[:, -1:] + 1
    for _ in range(params.max_new_tokens):
        if params.repetition_penalty and params.repetition_penalty != 1.0:
            logits = _repetition_penalty(logits, seen, params.repetition_penalty)
        if params.temperature <= 0:
            chosen = logits.argmax(-1).tolist()
        else:
            probs = _filter_logits(logits, params).softmax(-1).cpu()
            chosen = [int(torch.multinomial(probs[r], 1, generator=gens[r])) for r in range(len(rows))]
        for r, tok in enumerate(chosen):
            if done[r]:
                continue
            out[r].append(int(tok))
            if params.repetition_penalty != 1.0:
                seen[r] = torch.unique(torch.cat([seen[r], torch.tensor([tok], device=device)]))
            if on_token is not None:
                on_token(r, int(tok))
            if tok in stop_ids:
                done[r] = True
        if all(done):
            break
        step_ids = torch.tensor([[t if not d else pad_id] for t, d in zip(chosen, done)], device=device)
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        result = model(
            input_ids=step_ids, attention_mask=mask, position_ids=next_pos, use_cache=True, **{cache_kw: past}, **extra
        )
        past, logits = _cache_of(result), result.logits[:, -1, :].float()
        next_pos = next_pos + 1
    return [RowResult(o, "stop" if (o and o[-1] in stop_ids) else "length") for o in out]


@torch.inference_mode()
def response_logprobs(
    model, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, batch_size: int = 16
) -> list[list[float]]:
    """Log-probability (temperature 1) of each response token given its prompt and the tokens before it."""
    if len(prompts) != len(responses):
        raise ValueError(
            f"got {len(prompts)} conversations but {len(responses)} responses; pass one response per conversation"
        )
    limit = _context_limit(model)
    device = next(model.parameters()).device
    results: list[list[float]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(zip(prompts[start : start + batch_size], responses[start : start + batch_size]))
        rows = []
        for p, r in chunk:
            p, r = list(p), list(r)
            if limit and len(p) + len(r) > limit:
                if len(r) >= limit:
                    raise ValueError(f"response of {len(r)} tokens does not fit the model's {limit}-token context")
                p = p[-(limit - len(r)) :]
            rows.append((p, r))
        width = max(len(p) + len(r) for p, r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (p, r) in enumerate(rows):  # right padding: positions need no adjustment
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            mask[i, : len(p) + len(r)] = 1
        logp = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        for i, (p, r) in enumerate(rows):
            if not r:
                results.append([])
                continue
            pos = torch.arange(len(p) - 1, len(p) + len(r) - 1, device=device)
            tgt = torch.tensor(r, device=device)
            results.append(logp[i, pos, tgt].tolist())
    return results
