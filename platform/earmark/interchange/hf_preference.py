"""Hugging Face preference datasets (TRL's format), from local .parquet, .jsonl or .arrow files.

- plain:          ``{"prompt": str, "chosen": str, "rejected": str}``
- conversational: ``{"prompt": [messages], "chosen": [assistant message], "rejected": [...]}``
- implicit prompt: no ``prompt`` key; ``chosen``/``rejected`` are whole conversations sharing a prefix.
- audio columns:  ``audio``/``prompt_audio`` (the user's audio), ``chosen_audio``/``rejected_audio``;
  each a datasets ``Audio`` struct ``{"bytes", "path"}`` (bytes win; a path is read under the audio
  root) or a path string.
Each row becomes a prompt, a response per side (policy ``chosen_model``/``rejected_model`` if given,
else ``<file>-chosen``/``<file>-rejected``) and a judgment (+1 for chosen) with source ``hf:<file>``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earmark.interchange.base import Adapter, Record, Sample, iter_rows, short_hash, slug, text_of


def audio_ref(v: Any) -> dict[str, Any] | None:
    """An audio part from a datasets Audio value ({bytes, path}) or a path string."""
    if v is None:
        return None
    if isinstance(v, str):
        return {"type": "audio", "path": v}
    if isinstance(v, dict):
        if v.get("bytes"):
            b = v["bytes"]
            return {"type": "audio", "base64": base64.b64encode(b).decode() if isinstance(b, bytes) else b}
        if v.get("path"):
            return {"type": "audio", "path": v["path"]}
    return None


class HFPreference(Adapter):
    name = "hf"
    description = "Hugging Face preference rows: prompt/chosen/rejected, plain or conversational (+ audio columns)"
    expected = '{"prompt": str | [messages], "chosen": str | [messages], "rejected": str | [messages]}'

    def detect(self, sample: Sample) -> bool:
        return bool(sample.rows) and all(isinstance(r, dict) and "chosen" in r and "rejected" in r for r in sample.rows)

    def _conv(self, v: Any, path: Path, no: int, field: str) -> list[dict[str, Any]]:
        if isinstance(v, str):
            return [{"role": "assistant" if field != "prompt" else "user", "content": v}]
        if isinstance(v, list) and all(isinstance(m, dict) and "role" in m for m in v):
            return [{"role": m["role"], "content": text_of(m.get("content"))} for m in v]
        raise self.refuse(
            path,
            no,
            field,
            "is neither a string nor a list of {role, content} messages",
            "use the plain or conversational TRL preference form",
        )

    def iter_records(self, path: Path) -> Iterator[Record]:
        stem = slug(path.stem)
        source = f"hf:{path.name}"
        for no, row in iter_rows(path, self.name):
            if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
                raise self.refuse(path, no, "chosen/rejected", "is missing", "every row needs chosen and rejected")
            chosen = self._conv(row["chosen"], path, no, "chosen")
            rejected = self._conv(row["rejected"], path, no, "rejected")
            if row.get("prompt") is not None:
                prompt = self._conv(row["prompt"], path, no, "prompt")
            else:  # implicit prompt: the shared prefix of both conversations
                k = 0
                while k < min(len(chosen), len(rejected)) - 1 and chosen[k] == rejected[k]:
                    k += 1
                prompt, chosen, rejected = chosen[:k], chosen[k:], rejected[k:]
                if not prompt:
                    raise self.refuse(
                        path, no, "prompt", "is missing and chosen/rejected share no prefix", "add a prompt column"
                    )
            user_audio = audio_ref(row.get("prompt_audio", row.get("audio")))
            if user_audio is not None:
                for m in reversed(prompt):
                    if m["role"] == "user":
                        m["content"] = (
                            [{"type": "text", "text": m["content"]}, user_audio] if m["content"] else [user_audio]
                        )
                        break
            ext = slug(f"{stem}-{row.get('id') or row.get('prompt_id') or no}")
            regime = row.get("regime") or ("realtime" if user_audio or row.get("chosen_audio") else "reasoning")
            yield Record(no, "prompt", {"external_id": ext, "regime": regime, "messages": prompt})
            sides = {}
            for i, (side, conv) in enumerate((("chosen", chosen), ("rejected", rejected))):
                policy = slug(str(row.get(f"{side}_model") or f"{stem}-{side}"))
                reply = [m for m in conv if m["role"] == "assistant"]
                resp: dict[str, Any] = {
                    "prompt": ext,
                    "policy": policy,
                    "sample_index": i if row.get(f"{side}_model") is None else 0,
                    "text": reply[-1]["content"] if reply else "",
                }
                if len(conv) > 1:
                    resp["messages"] = prompt + conv
                if (a := audio_ref(row.get(f"{side}_audio"))) is not None:
                    resp["audio"] = a
                sides[side] = {k: resp[k] for k in ("policy", "sample_index")}
                yield Record(no, "response", resp, side)
            if sides["chosen"] == sides["rejected"]:
                raise self.refuse(path, no, "chosen_model", "equals rejected_model", "name two different models")
            yield Record(
                no,
                "judgment",
                {
                    "external_id": f"{ext}-{short_hash([chosen, rejected])[:8]}",
                    "source": source,
                    "prompt": ext,
                    "a": sides["chosen"],
                    "b": sides["rejected"],
                    "preference": 1.0,
                    **(
                        {"confidence": row["score_chosen"] / 10}
                        if isinstance(row.get("score_chosen"), int | float) and 0 <= row["score_chosen"] <= 10
                        else {}
                    ),
                },
            )
