"""Chatbot Arena battles (lmsys/chatbot_arena_conversations, arena-human-preference dumps).

``{"question_id", "model_a", "model_b", "winner": "model_a"|"model_b"|"tie"|"tie (bothbad)",
"judge", "conversation_a": [{role, content}], "conversation_b": [...], "turn", "language", "tstamp"}``
Each battle becomes a prompt (the conversation before the last assistant turn of side A), a
response per model (outside models become external policies named after them), and a judgment
with source ``arena:<file>`` and the battle's ``judge`` as annotator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earmark.interchange.base import Adapter, Record, Sample, iter_rows, slug, text_of

WINNERS = {
    "model_a": (1.0, False, False),
    "model_b": (-1.0, False, False),
    "tie": (0.0, True, False),
    "tie (bothbad)": (0.0, True, True),
}


class ArenaBattles(Adapter):
    name = "arena"
    description = "Chatbot Arena battles (conversation_a/b, model_a/b, winner incl. tie and tie (bothbad))"
    expected = '{"question_id", "model_a", "model_b", "winner", "conversation_a", "conversation_b"}'

    def detect(self, sample: Sample) -> bool:
        return bool(sample.rows) and all(
            isinstance(r, dict) and "conversation_a" in r and "winner" in r for r in sample.rows
        )

    def _conv(self, v: Any, path: Path, no: int, field: str) -> list[dict[str, Any]]:
        if not isinstance(v, list) or not v or not all(isinstance(m, dict) and "role" in m for m in v):
            raise self.refuse(path, no, field, "is not a list of {role, content} messages", "fix the battle row")
        conv = [{"role": m["role"], "content": text_of(m.get("content"))} for m in v]
        if conv[-1]["role"] != "assistant":
            raise self.refuse(path, no, field, "does not end with the model's reply", "drop unanswered battles")
        return conv

    def iter_records(self, path: Path) -> Iterator[Record]:
        source = f"arena:{path.name}"
        for no, row in iter_rows(path, self.name):
            if not isinstance(row, dict):
                raise self.refuse(path, no, "(row)", "is not an object", "one battle object per line")
            winner = row.get("winner")
            if winner not in WINNERS:
                raise self.refuse(path, no, "winner", f"is {winner!r}", f"use one of {', '.join(WINNERS)}")
            for k in ("model_a", "model_b"):
                if not isinstance(row.get(k), str) or not row[k]:
                    raise self.refuse(path, no, k, "is missing", "name the model of each side")
            conv_a = self._conv(row.get("conversation_a"), path, no, "conversation_a")
            conv_b = self._conv(row.get("conversation_b"), path, no, "conversation_b")
            qid = row.get("question_id") or row.get("id") or no
            ext = slug(f"arena-{qid}")
            yield Record(
                no, "prompt", {"external_id": ext, "regime": row.get("regime") or "reasoning", "messages": conv_a[:-1]}
            )
            ma, mb = slug(row["model_a"]), slug(row["model_b"])
            ref_a = {"policy": ma, "sample_index": 0}
            ref_b = {"policy": mb, "sample_index": 1 if ma == mb else 0}
            for side, ref, conv in (("a", ref_a, conv_a), ("b", ref_b, conv_b)):
                resp = {"prompt": ext, **ref, "text": conv[-1]["content"]}
                if len(conv) > 2:
                    resp["messages"] = conv
                yield Record(no, "response", resp, f"conversation_{side}")
            pref, tie, both_bad = WINNERS[winner]
            details = {k: row[k] for k in ("turn", "language", "tstamp", "anony") if k in row}
            yield Record(
                no,
                "judgment",
                {
                    "external_id": slug(f"battle-{qid}"),
                    "source": source,
                    "annotator": str(row["judge"])[:200] if row.get("judge") else None,
                    "prompt": ext,
                    "a": ref_a,
                    "b": ref_b,
                    "preference": pref,
                    "tie": tie,
                    "both_bad": both_bad,
                    "details": {"winner": winner, **details},
                },
            )
