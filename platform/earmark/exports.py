"""Exports of snapshots in the formats trainers load unchanged, carrying each regime's content.

- trl:      TRL/HF preference, conversational: prompt=[messages], chosen=[assistant], rejected=[assistant]
- openrlhf: OpenRLHF preference (0.11 CLI, ``openrlhf.cli.train_dpo``/``train_rm``): ``prompt`` (messages),
            ``chosen``/``rejected`` (the reply message only). Train with
            ``--data.dataset FILE --data.prompt_key prompt --data.chosen_key chosen
            --data.rejected_key rejected --data.apply_chat_template``: with a prompt key OpenRLHF renders
            prompt + chosen itself, so the reply columns must not repeat the prompt. ``margin`` is what
            its RewardDataset reads as the reward gap (see "Numeric columns").
- verl:     veRL RL parquet: data_source, prompt, ability, reward_model{style, ground_truth}, extra_info;
            only prompts with a verifiable reference (answer, text or expected tool calls)
- nemo_rl:  NeMo-RL preference: context=[messages], completions=[{rank, completion=[messages]}]
- chat:     SFT in the chat form (earmark.domain.messages): messages=[system persona, prompt..., chosen reply], one per
            distinct chosen rollout (asr: the reference transcript is the target when there is one)
- best_of_n: best-of-N SFT data: messages=[prompt..., top reply] per prompt by a reward composition's
            total (built from rollouts and scores, not from pairs; see ``best_of_n``)

Messages take one of two content forms (``content``):
- ``text``:  ``{"role", "content": str}``, for text trainers; audio parts become their transcript.
- ``parts``: ``{"role", "content": [{"type": "text", "text"} | {"type": "audio", "audio_sha256",
             "transcript"?}]}``, the chat form for speech models; audio stays a blob reference.
Both keep ``tool_calls`` (``[{"name", "arguments"}]``) on assistant messages and a ``tools`` column
with the prompt's tool schemas (TRL passes a ``tools`` column to the chat template).

Numeric columns of the pair formats (trl, openrlhf, nemo_rl):
- ``confidence``: the label's confidence, the winning side's share of the weighted vote, in (0.5, 1]
  (AI labels: sigmoid(score gap / T)); 0.5 for a kept tie.
- ``margin`` (openrlhf): the reward gap this confidence implies under Bradley-Terry,
  ``log(c / (1 - c))`` with c clipped to [0.5, 0.99] (0 for a tie, at most 4.595); OpenRLHF reads it as
  the chosen-minus-rejected reward gap of its margin loss.
- ``weight``: the pair weight earmark's own DPO worker multiplies the pair's loss by (the total
  weighted rater evidence behind the label; for AI labels the absolute score gap).

Audio (``attach_audio``, ``earmark dataset export --audio``): ``prompt_audio``, ``chosen_audio`` and
``rejected_audio`` columns (``audio`` for chat SFT rows) carry the clips as ``sha`` (sha256 strings;
``earmark dataset fetch-audio`` fetches them), ``files`` (paths of copies beside the export,
relative to it) or ``embed`` (the HF ``datasets.Audio`` feature: ``{"bytes", "path"}``, Parquet only).

Per regime (``_reply``/``_prompt``/``regime_extras``):
- asr: the user's audio part without its transcript (the transcript is the label: leaving it in the
  prompt would teach copying); the reply is text; ``reference_text`` column.
- tts: the text to speak; the reply is the rendered audio (transcript = the text spoken).
- realtime: persona card as the system message; spoken reply as text + audio.
- duplex: user and assistant tracks of the rollout's timeline as audio parts; tool calls from the
  action channel on the reply; ``actions`` column (chunk, t_s, label, plan, tool_calls).
- reasoning: ``answer`` column keeps the verifiable answer beside the (human-preferred) reply.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMATS = ("trl", "openrlhf", "verl", "nemo_rl", "chat")
CONTENT_MODES = ("text", "parts")
AUDIO_PLACEHOLDER = "<audio>"  # text form of an audio part that has no usable transcript


def _loads(v: Any) -> Any:
    return json.loads(v) if isinstance(v, str) else v


def _check_mode(content: str) -> None:
    if content not in CONTENT_MODES:
        raise ValueError(f"content form {content!r} is unknown; use one of {', '.join(CONTENT_MODES)}")


def _part(p: Any, regime: str | None, role: str, content: str) -> Any:
    """One content part in the requested form (text form: a string, or None to drop)."""
    if isinstance(p, str):
        p = {"type": "text", "text": p}
    kind = p.get("type")
    # asr: the transcript of the user's audio is the answer; it must not travel with the prompt.
    hide_transcript = regime == "asr" and role == "user"
    if kind == "audio":
        transcript = None if hide_transcript else p.get("transcript")
        if content == "text":
            return transcript or AUDIO_PLACEHOLDER
        out = {"type": "audio", "audio_sha256": p.get("audio_sha256")}
        return {**out, "transcript": transcript} if transcript else out
    if kind == "token":
        return (
            None
            if content == "text"
            else {"type": "token", "ids": list(p.get("ids") or []), **({"vocab": p["vocab"]} if p.get("vocab") else {})}
        )
    text = str(p.get("text") or "")
    return text if content == "text" else {"type": "text", "text": text}


def _message(m: dict[str, Any], regime: str | None, content: str) -> dict[str, Any]:
    role, c = m.get("role", "user"), m.get("content", "")
    parts = [c] if isinstance(c, str) else list(c or [])
    conv = [x for x in (_part(p, regime, role, content) for p in parts) if x is not None]
    out: dict[str, Any] = {"role": role, "content": " ".join(conv).strip() if content == "text" else conv}
    if m.get("tool_calls"):
        out["tool_calls"] = [_tool_call(t) for t in m["tool_calls"]]
    if m.get("name"):
        out["name"] = m["name"]
    return out


def _tool_call(t: dict[str, Any]) -> dict[str, Any]:
    args = t.get("arguments")
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string; the chat form keeps an object
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            args = {"__unparsed__": args}
    return {"name": t.get("name"), "arguments": args or {}}


def _prompt(row: dict[str, Any], content: str) -> list[dict[str, Any]]:
    """The conversation before the reply. Snapshots of schema 1 have only plain-text messages."""
    raw = _loads(row.get("prompt_chat")) or _loads(row["prompt_messages"])
    msgs = [_message(m, row.get("regime"), content) for m in raw]
    tl = _loads(row.get("chosen_timeline") or row.get("timeline")) or {}
    user = tl.get("user") or {}
    if row.get("regime") == "duplex" and user.get("audio_sha256") and user["audio_sha256"] not in _audio_shas(raw):
        # the session's user track is what the model heard; the prompt may only describe the scenario
        part = _part(
            {"type": "audio", "audio_sha256": user["audio_sha256"], "transcript": user.get("transcript")},
            "duplex",
            "user",
            content,
        )
        msgs.append({"role": "user", "content": part if content == "text" else [part]})
    return msgs


def _audio_shas(messages: list[dict[str, Any]]) -> set[str | None]:
    return {
        p.get("audio_sha256")
        for m in messages
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if isinstance(p, dict) and p.get("type") == "audio"
    }


def actions(timeline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The action channel with times: [{chunk, t_s, label, plan, tool_calls}]."""
    if not timeline:
        return []
    chunk_s = float(timeline.get("chunk_ms", 160)) / 1000.0
    return [
        {
            "chunk": int(a["chunk"]),
            "t_s": round(int(a["chunk"]) * chunk_s, 3),
            "label": a.get("label"),
            "plan": a.get("plan", ""),
            "tool_calls": [_tool_call(t) for t in a.get("tool_calls") or []],
        }
        for a in timeline.get("actions") or []
    ]


def _reply(row: dict[str, Any], prefix: str, content: str, text: str | None = None) -> dict[str, Any]:
    """The assistant message of one response (``prefix`` 'chosen_', 'rejected_' or '' for a rollout)."""
    regime = row.get("regime")
    text = row[f"{prefix}text"] if text is None else text
    timeline = _loads(row.get(f"{prefix}timeline")) or {}
    sha = row.get(f"{prefix}audio_sha256") or (timeline.get("assistant") or {}).get("audio_sha256")
    calls = _loads(row.get(f"{prefix}tool_calls")) or [c for a in actions(timeline) for c in a["tool_calls"]]
    if content == "text":
        msg: dict[str, Any] = {"role": "assistant", "content": text}
    elif regime == "asr" or not sha:
        msg = {"role": "assistant", "content": [{"type": "text", "text": text}]}
    elif regime == "tts":  # the reply is the rendered speech of the text to speak
        msg = {"role": "assistant", "content": [{"type": "audio", "audio_sha256": sha, "transcript": text}]}
    else:
        msg = {"role": "assistant", "content": [{"type": "text", "text": text}, {"type": "audio", "audio_sha256": sha}]}
    if calls:
        msg["tool_calls"] = [_tool_call(c) for c in calls]
    return msg


def regime_extras(row: dict[str, Any], prefix: str = "chosen_") -> dict[str, Any]:
    """Columns beside the messages that keep each regime's ground truth and tools. Every record gets
    every column (None where it does not apply): Hugging Face ``Dataset.from_list`` takes its columns
    from the first record, and Arrow needs one schema for a file that mixes regimes."""
    regime = row.get("regime")
    ref = _loads(row.get("reference")) or {}
    answer = ref.get("answer") if regime == "reasoning" else None
    return {
        "regime": regime,
        "tools": _loads(row.get("tools")) or None,
        "reference_text": str(ref["text"]) if regime == "asr" and ref.get("text") else None,
        "text_to_speak": str(ref["text"]) if regime == "tts" and ref.get("text") else None,
        "answer": answer if answer is None or isinstance(answer, str) else json.dumps(answer),
        "expected_tool_calls": [_tool_call(t) for t in ref["tool_calls"]]
        if ref.get("tool_calls") is not None
        else None,
        "actions": actions(_loads(row.get(f"{prefix}timeline"))) if regime == "duplex" else None,
    }


def to_trl(rows: list[dict[str, Any]], content: str = "text") -> list[dict[str, Any]]:
    _check_mode(content)
    return [
        {
            "prompt": _prompt(r, content),
            "chosen": [_reply(r, "chosen_", content)],
            "rejected": [_reply(r, "rejected_", content)],
            "row_id": r["row_id"],
            "label_source": r["label_source"],
            **_numeric(r),
            **regime_extras(r),
        }
        for r in rows
    ]


def to_openrlhf(rows: list[dict[str, Any]], content: str = "text") -> list[dict[str, Any]]:
    _check_mode(content)
    out = []
    for r in rows:
        out.append(
            {
                "prompt": _prompt(r, content),
                "chosen": [_reply(r, "chosen_", content)],
                "rejected": [_reply(r, "rejected_", content)],
                "margin": reward_gap(r["margin"]),
                "row_id": r["row_id"],
                **_numeric(r),
                **regime_extras(r),
            }
        )
    return out


MAX_CONFIDENCE_FOR_GAP = 0.99


def reward_gap(confidence: float | None) -> float:
    """Bradley-Terry reward gap implied by a label confidence: logit(c), c clipped to [0.5, 0.99]."""
    if confidence is None:
        return 0.0
    c = min(max(float(confidence), 0.5), MAX_CONFIDENCE_FOR_GAP)
    return round(math.log(c / (1 - c)), 6)


def _numeric(r: dict[str, Any]) -> dict[str, Any]:
    return {"confidence": r.get("margin"), "weight": r.get("weight")}


def _ground_truth(ref: dict[str, Any]) -> str | None:
    truth = ref.get("answer") if ref.get("answer") is not None else ref.get("text")
    if truth is not None:
        return truth if isinstance(truth, str) else json.dumps(truth)
    if ref.get("tool_calls") is not None:  # a tool-call task: the reward function compares call lists
        return json.dumps([_tool_call(t) for t in ref["tool_calls"]], sort_keys=True)
    return None


def to_verl(rows: list[dict[str, Any]], split: str = "train", content: str = "text") -> list[dict[str, Any]]:
    """One row per prompt that has a verifiable reference (answer, text or tool calls)."""
    _check_mode(content)
    seen: dict[int, dict[str, Any]] = {}
    for r in rows:
        ref = _loads(r.get("reference")) or {}
        truth = _ground_truth(ref)
        if truth is None or r["prompt_id"] in seen:
            continue
        extra = {"split": split, "index": len(seen), "prompt_external_id": r["prompt_external_id"]}
        if tools := _loads(r.get("tools")):
            extra["tools"] = tools
        seen[r["prompt_id"]] = {
            "data_source": f"earmark/{r['regime']}",
            "prompt": _prompt(r, content),
            "ability": r["regime"],
            "reward_model": {"style": "rule", "ground_truth": truth},
            "extra_info": extra,
        }
    return list(seen.values())


def to_nemo_rl(rows: list[dict[str, Any]], content: str = "text") -> list[dict[str, Any]]:
    _check_mode(content)
    return [
        {
            "context": _prompt(r, content),
            "completions": [
                {"rank": 0, "completion": [_reply(r, "chosen_", content)]},
                {"rank": 1, "completion": [_reply(r, "rejected_", content)]},
            ],
            "row_id": r["row_id"],
            **_numeric(r),
            **regime_extras(r),
        }
        for r in rows
    ]


def to_chat(rows: list[dict[str, Any]], content: str = "parts") -> list[dict[str, Any]]:
    """SFT conversations from the preferred responses: one per distinct chosen rollout."""
    _check_mode(content)
    out, seen = [], set()
    for r in rows:
        if r["chosen_rollout_id"] in seen:
            continue
        seen.add(r["chosen_rollout_id"])
        ref = _loads(r.get("reference")) or {}
        # asr: a reference transcript is the ground truth; no sampled transcript beats it.
        use_ref = r.get("regime") == "asr" and bool(ref.get("text"))
        reply = _reply(r, "chosen_", content, text=str(ref["text"]) if use_ref else None)
        out.append(
            {
                "messages": _prompt(r, content) + [reply],
                "rollout_id": r["chosen_rollout_id"],
                "target": "reference" if use_ref else "chosen",
                "label_source": r["label_source"],
                **regime_extras(r),
            }
        )
    return out


CONVERTERS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "trl": to_trl,
    "openrlhf": to_openrlhf,
    "verl": to_verl,
    "nemo_rl": to_nemo_rl,
    "chat": to_chat,
}
DEFAULT_CONTENT = {"chat": "parts"}  # the others default to text: what text trainers load unchanged


def convert(rows: list[dict[str, Any]], fmt: str, content: str | None = None) -> list[dict[str, Any]]:
    if fmt not in CONVERTERS:
        raise ValueError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)} (or best_of_n)")
    return CONVERTERS[fmt](rows, content=content or DEFAULT_CONTENT.get(fmt, "text"))


def best_of_n(candidates: list[dict[str, Any]], content: str = "text") -> list[dict[str, Any]]:
    """The top-scored reply per prompt. A candidate is a rollout row: prompt_id, rollout_id, text,
    score (the composition's total) and the prompt (``prompt_chat`` or ``prompt_messages``), plus
    optionally regime, audio_sha256, tool_calls, timeline, reference, tools, verifiable, preference.
    Ties go to the lower rollout id, so the choice is deterministic."""
    _check_mode(content)
    best: dict[int, dict[str, Any]] = {}
    n: dict[int, int] = {}
    for c in candidates:
        n[c["prompt_id"]] = n.get(c["prompt_id"], 0) + 1
        cur = best.get(c["prompt_id"])
        if cur is None or (c["score"], -c["rollout_id"]) > (cur["score"], -cur["rollout_id"]):
            best[c["prompt_id"]] = c
    out = []
    for pid, b in sorted(best.items()):
        rec = {
            "messages": _prompt(b, content) + [_reply(b, "", content)],
            "score": b["score"],
            "rollout_id": b["rollout_id"],
            "prompt_id": pid,
            "n_candidates": n[pid],
        }
        for k in ("verifiable", "preference", "composition_version"):
            if k in b:
                rec[k] = b[k]
        out.append({**rec, **regime_extras(b, prefix="")})
    return out


AUDIO_MODES = ("sha", "files", "embed")
PAIR_FORMATS = ("trl", "openrlhf", "nemo_rl")


def first_audio_sha(messages: Any) -> str | None:
    for m in _loads(messages) or []:
        c = m.get("content") if isinstance(m, dict) else None
        if isinstance(c, list):
            for p in c:
                if isinstance(p, dict) and p.get("type") == "audio" and p.get("audio_sha256"):
                    return p["audio_sha256"]
    return None


def audio_shas(records: list[dict[str, Any]], rows: list[dict[str, Any]], fmt: str) -> list[dict[str, str | None]]:
    """Per record, the sha256 of each audio column (prompt_audio, chosen_audio, rejected_audio / audio)."""
    if fmt in PAIR_FORMATS:
        return [
            {
                "prompt_audio": first_audio_sha(r.get("prompt_chat")),
                "chosen_audio": r.get("chosen_audio_sha256"),
                "rejected_audio": r.get("rejected_audio_sha256"),
            }
            for r in rows
        ]
    by_rollout = {r["chosen_rollout_id"]: r.get("chosen_audio_sha256") for r in rows}
    by_prompt = {r["prompt_external_id"]: first_audio_sha(r.get("prompt_chat")) for r in rows}
    if fmt == "chat":
        return [{"audio": by_rollout.get(rec["rollout_id"])} for rec in records]
    if fmt == "verl":
        return [{"prompt_audio": by_prompt.get(rec["extra_info"]["prompt_external_id"])} for rec in records]
    return [{"prompt_audio": None, "audio": rec.get("audio_sha256")} for rec in records]


def attach_audio(
    records: list[dict[str, Any]],
    shas: list[dict[str, str | None]],
    mode: str,
    read: Callable[[str], bytes] | None = None,
    files_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Add the audio columns: sha256 strings, paths of files written to files_dir, or embedded bytes."""
    if mode not in AUDIO_MODES:
        raise ValueError(f"--audio {mode!r} is unknown; use one of {', '.join(AUDIO_MODES)}")
    written: set[str] = set()
    out = []
    for rec, cols in zip(records, shas, strict=True):
        extra: dict[str, Any] = {}
        for col, sha in cols.items():
            if sha is None:
                extra[col] = None
            elif mode == "sha":
                extra[col] = sha
            elif mode == "files":
                assert files_dir is not None and read is not None
                if sha not in written:
                    files_dir.mkdir(parents=True, exist_ok=True)
                    (files_dir / f"{sha}.wav").write_bytes(read(sha))
                    written.add(sha)
                extra[col] = f"{files_dir.name}/{sha}.wav"
            else:
                assert read is not None
                extra[col] = {"bytes": read(sha), "path": f"{sha}.wav"}
        out.append({**rec, **extra})
    return out


def hf_features_metadata(audio_columns: list[str]) -> dict[bytes, bytes]:
    """Parquet schema metadata that makes `datasets` read these struct columns as ``Audio``."""
    feats = {c: {"_type": "Audio"} for c in audio_columns}
    return {b"huggingface": json.dumps({"info": {"features": feats}}).encode()}


def write(records: list[dict[str, Any]], fmt: str, audio_columns: list[str] | None = None) -> bytes:
    """Serialize as Parquet (``.parquet``) or JSONL (``.jsonl``)."""
    if fmt == "jsonl":
        return ("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n").encode()
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        table = pa.Table.from_pylist(records)
        if audio_columns:  # embedded audio: datasets' Audio feature (struct<bytes, path>)
            table = table.replace_schema_metadata(
                {
                    **(table.schema.metadata or {}),
                    **hf_features_metadata([c for c in audio_columns if c in table.column_names]),
                }
            )
        pq.write_table(table, buf)
        return buf.getvalue()
    raise ValueError(f"file format {fmt!r} is unknown; use parquet or jsonl")
