"""OpenAI chat rows: ``{"messages": [...], "tools"?, "reference"?}`` as used for fine-tuning and evals.

User content parts ``{"type": "input_audio", "input_audio": {"data": base64, "format": "wav"}}``
become audio parts; assistant ``tool_calls`` (``function.arguments`` a JSON string) become earmark
tool calls; ``tools`` (``{"type": "function", "function": {...}}``) are kept as the prompt's tool
schemas. A final assistant message is the response of policy ``model`` (default ``openai-chat``).
``reference`` may be a string (the answer) or an object. ``regime`` may be given per row;
otherwise prompts with audio are ``realtime`` and text-only ones ``reasoning``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from earmark.interchange.base import Adapter, Record, Sample, iter_rows, short_hash, slug


class OpenAIChat(Adapter):
    name = "openai"
    description = "OpenAI chat JSONL (messages with input_audio parts, tools, tool calls, reference)"
    expected = '{"messages": [{"role", "content": str | [{"type": "text"|"input_audio", ...}]}], "tools"?}'

    def detect(self, sample: Sample) -> bool:
        return bool(sample.rows) and all(
            isinstance(r, dict) and isinstance(r.get("messages"), list) and "external_id" not in r for r in sample.rows
        )

    def _part(self, p: Any, path: Path, no: int, where: str) -> dict[str, Any]:
        if isinstance(p, str):
            return {"type": "text", "text": p}
        if not isinstance(p, dict):
            raise self.refuse(path, no, where, "is not a content part object", "use {'type': 'text', 'text': ...}")
        kind = p.get("type")
        if kind == "text":
            return {"type": "text", "text": p.get("text", "")}
        if kind == "input_audio":
            audio = p.get("input_audio") or {}
            if not isinstance(audio, dict) or not audio.get("data"):
                raise self.refuse(
                    path, no, f"{where}.input_audio", "has no data", "give {'data': base64 WAV, 'format': 'wav'}"
                )
            return {"type": "audio", "base64": audio["data"]}
        raise self.refuse(
            path, no, f"{where}.type", f"is {kind!r}", "use text or input_audio parts (images are not supported)"
        )

    def _message(self, m: Any, path: Path, no: int, i: int) -> dict[str, Any]:
        if not isinstance(m, dict) or "role" not in m:
            raise self.refuse(path, no, f"messages[{i}]", "is not a {role, content} object", "fix that message")
        role = "system" if m["role"] == "developer" else m["role"]
        c = m.get("content")
        content = (
            [self._part(p, path, no, f"messages[{i}].content[{j}]") for j, p in enumerate(c)]
            if isinstance(c, list)
            else ("" if c is None else c)
        )
        out: dict[str, Any] = {"role": role, "content": content}
        if m.get("tool_calls"):
            out["tool_calls"] = [
                self._tool_call(t, path, no, f"messages[{i}].tool_calls[{k}]") for k, t in enumerate(m["tool_calls"])
            ]
        if m.get("name"):
            out["name"] = m["name"]
        return out

    def _tool_call(self, t: Any, path: Path, no: int, where: str) -> dict[str, Any]:
        fn = t.get("function") if isinstance(t, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            raise self.refuse(path, no, where, "has no function.name", "use {'type': 'function', 'function': {...}}")
        args = fn.get("arguments") or {}
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                raise self.refuse(
                    path, no, f"{where}.function.arguments", "is not JSON", "arguments must be a JSON object string"
                ) from None
        if not isinstance(args, dict):
            raise self.refuse(path, no, f"{where}.function.arguments", "is not an object", "pass named arguments")
        return {"name": fn["name"], "arguments": args}

    def iter_records(self, path: Path) -> Iterator[Record]:
        stem = slug(path.stem)
        for no, row in iter_rows(path, self.name):
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
                raise self.refuse(path, no, "messages", "is missing or empty", "give a non-empty messages list")
            msgs = [self._message(m, path, no, i) for i, m in enumerate(row["messages"])]
            reply = msgs.pop() if msgs and msgs[-1]["role"] == "assistant" and len(msgs) > 1 else None
            raw_id = row.get("id") or row.get("custom_id")
            ext = slug(f"{stem}-{raw_id}") if raw_id else f"{stem}-{no}-{short_hash(msgs)[:8]}"
            has_audio = any(
                isinstance(m["content"], list) and any(p["type"] == "audio" for p in m["content"]) for m in msgs
            )
            ref = row.get("reference")
            if isinstance(ref, str):
                ref = {"answer": ref}
            tools = row.get("tools")
            if tools is not None and not isinstance(tools, list):
                raise self.refuse(path, no, "tools", "is not a list", "give a list of tool schemas")
            prompt = {
                "external_id": ext,
                "regime": row.get("regime") or ("realtime" if has_audio else "reasoning"),
                "messages": msgs,
                "reference": ref,
                "tools": tools,
            }
            if row.get("split"):
                prompt["split"] = row["split"]
            yield Record(no, "prompt", {k: v for k, v in prompt.items() if v is not None})
            if reply is not None:
                content = reply["content"]
                text = (
                    content
                    if isinstance(content, str)
                    else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
                )
                resp: dict[str, Any] = {
                    "prompt": ext,
                    "policy": slug(str(row.get("model") or "openai-chat")),
                    "text": text,
                }
                if reply.get("tool_calls"):
                    resp["tool_calls"] = reply["tool_calls"]
                audio = row["messages"][-1].get("audio") if isinstance(row["messages"][-1], dict) else None
                if isinstance(audio, dict) and audio.get("data"):
                    resp["audio"] = {"type": "audio", "base64": audio["data"], "transcript": audio.get("transcript")}
                    resp["text"] = resp["text"] or audio.get("transcript") or ""
                yield Record(no, "response", resp, "messages[-1]")
