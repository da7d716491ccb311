"""Exports of snapshots in the formats trainers load unchanged.

- trl:      TRL/HF preference, conversational: prompt=[messages], chosen=[assistant], rejected=[assistant]
- openrlhf: OpenRLHF preference: prompt (messages), chosen/rejected (messages incl. the reply), their
            default keys (``--prompt_key prompt --chosen_key chosen --rejected_key rejected``)
- verl:     veRL RL parquet: data_source, prompt, ability, reward_model{style, ground_truth}, extra_info;
            only prompts with a verifiable reference
- nemo_rl:  NeMo-RL preference: context=[messages], completions=[{rank, completion=[messages]}]
- sft_best_of_n: best-of-N SFT data: messages=[prompt..., best reply] per prompt by a reward
            composition (built from rollouts and scores, not from pairs)
"""
from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

FORMATS = ("trl", "openrlhf", "verl", "nemo_rl")


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def to_trl(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"prompt": json.loads(r["prompt_messages"]), "chosen": _assistant(r["chosen_text"]),
             "rejected": _assistant(r["rejected_text"]), "row_id": r["row_id"], "label_source": r["label_source"]}
            for r in rows]


def to_openrlhf(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        prompt = json.loads(r["prompt_messages"])
        out.append({"prompt": prompt, "chosen": prompt + _assistant(r["chosen_text"]),
                    "rejected": prompt + _assistant(r["rejected_text"]), "margin": r["margin"], "row_id": r["row_id"]})
    return out


def to_verl(rows: list[dict[str, Any]], split: str = "train") -> list[dict[str, Any]]:
    """One row per prompt that has a verifiable reference (answer or text)."""
    seen: dict[int, dict[str, Any]] = {}
    for r in rows:
        ref = json.loads(r["reference"]) if r.get("reference") else None
        truth = (ref or {}).get("answer") or (ref or {}).get("text")
        if truth is None or r["prompt_id"] in seen:
            continue
        seen[r["prompt_id"]] = {
            "data_source": f"earmark/{r['regime']}", "prompt": json.loads(r["prompt_messages"]),
            "ability": r["regime"], "reward_model": {"style": "rule", "ground_truth": str(truth)},
            "extra_info": {"split": split, "index": len(seen), "prompt_external_id": r["prompt_external_id"]},
        }
    return list(seen.values())


def to_nemo_rl(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"context": json.loads(r["prompt_messages"]),
             "completions": [{"rank": 0, "completion": _assistant(r["chosen_text"])},
                             {"rank": 1, "completion": _assistant(r["rejected_text"])}],
             "row_id": r["row_id"]} for r in rows]


CONVERTERS: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
    "trl": to_trl, "openrlhf": to_openrlhf, "verl": to_verl, "nemo_rl": to_nemo_rl,
}


def best_of_n(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """candidates: {prompt_id, prompt_messages (list), text, score, rollout_id} -> the top reply per prompt."""
    best: dict[int, dict[str, Any]] = {}
    for c in candidates:
        cur = best.get(c["prompt_id"])
        if cur is None or (c["score"], -c["rollout_id"]) > (cur["score"], -cur["rollout_id"]):
            best[c["prompt_id"]] = c
    return [{"messages": b["prompt_messages"] + _assistant(b["text"]), "score": b["score"],
             "rollout_id": b["rollout_id"]} for _, b in sorted(best.items())]


def write(records: list[dict[str, Any]], fmt: str) -> bytes:
    """Serialize as Parquet (``.parquet``) or JSONL (``.jsonl``)."""
    if fmt == "jsonl":
        return ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buf)
        return buf.getvalue()
    raise ValueError(f"file format {fmt!r} is unknown; use parquet or jsonl")
