"""The earmark interchange file formats (JSON Lines), one pydantic model per kind of line.

Every adapter translates its format's rows into these; the import service validates them here, so
every format gets the same limits and the same error messages. ``earmark schema [FORMAT]`` prints
their JSON Schema (also in docs/interchange.md).

A line of an earmark JSONL file may carry ``"kind": "prompt" | "persona" | "response" | "judgment"``;
without it the kind is read from the keys (``external_id`` + ``messages`` -> prompt, ``a`` + ``b`` ->
judgment, ``policy`` -> response, ``name`` -> persona).
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from earmark.domain.limits import Limits
from earmark.domain.messages import AudioPart, Message, ToolCall, check_text
from earmark.domain.records import NAME_PATTERN, PersonaCreate, PromptCreate

KINDS = ("prompt", "persona", "response", "judgment")
EXTERNAL_ID_PATTERN = NAME_PATTERN


def json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def check_json_limit(value: Any, what: str) -> Any:
    """Limits.MAX_JSON_BYTES applies to persona cards, references, tool schemas and details."""
    if value is not None and (n := json_bytes(value)) > Limits.MAX_JSON_BYTES:
        raise ValueError(
            f"{what} is {n} bytes as JSON; the limit is {Limits.MAX_JSON_BYTES} bytes: keep large data in files"
        )
    return value


class PromptImport(PromptCreate):
    """A prompt (the PromptCreate of `earmark prompts import`), with the 1 MB JSON limits enforced."""

    @field_validator("reference")
    @classmethod
    def _ref(cls, v: Any) -> Any:
        return check_json_limit(v, "reference")

    @field_validator("tools")
    @classmethod
    def _tools(cls, v: Any) -> Any:
        return check_json_limit(v, "tools")


class PersonaImport(PersonaCreate):
    @field_validator("voice")
    @classmethod
    def _voice(cls, v: Any) -> Any:
        return check_json_limit(v, "voice")


class ResponseRef(BaseModel):
    """Which response of a prompt: the policy (an outside model becomes an external policy) and its sample."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS)
    sample_index: int = Field(default=0, ge=0, lt=Limits.MAX_SAMPLES_PER_PROMPT)
    round: int = Field(default=0, ge=0)


class ResponseImport(ResponseRef):
    """One response of a model to a prompt (stored as a rollout of the policy, kind 'external' when new)."""

    prompt: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS, description="external_id of the prompt")
    text: str = Field(default="", description="the reply's text (or the transcript of its audio)")
    audio: AudioPart | None = Field(default=None, description="the reply's audio: path, base64 or audio_sha256")
    tool_calls: list[ToolCall] | None = None
    messages: list[Message] | None = Field(
        default=None,
        max_length=Limits.MAX_MESSAGES,
        description="the conversation this reply ends (history + reply) when it differs from the prompt's",
    )

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v, "response text")


class JudgmentImport(BaseModel):
    """A pairwise judgment from outside earmark; kept with its source and annotator, never as a rater's."""

    model_config = ConfigDict(extra="forbid")
    external_id: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS, description="id in its source")
    source: str | None = Field(default=None, max_length=Limits.MAX_NAME_CHARS, description="default: the file")
    annotator: str | None = Field(default=None, max_length=Limits.MAX_NAME_CHARS)
    prompt: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS)
    a: ResponseRef
    b: ResponseRef
    preference: float = Field(ge=-1, le=1, description="+1: a is better, -1: b is better, 0: tie")
    tie: bool = False
    both_bad: bool = Field(default=False, description="a tie where neither response is acceptable")
    dimension: str = Field(default="overall", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    confidence: float | None = Field(default=None, ge=0, le=1, description="the source's confidence, if any")
    comment: str | None = Field(default=None, max_length=Limits.MAX_RATIONALE_CHARS)
    details: dict[str, Any] = Field(default_factory=dict, description="ratings, raw choice, other source fields")

    @field_validator("preference", "confidence")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("comment")
    @classmethod
    def _comment(cls, v: str | None) -> str | None:
        return None if v is None else check_text(v, "comment")

    @field_validator("details")
    @classmethod
    def _details(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_json_limit(v, "details")


MODELS: dict[str, type[BaseModel]] = {
    "prompt": PromptImport,
    "persona": PersonaImport,
    "response": ResponseImport,
    "judgment": JudgmentImport,
}


def infer_kind(obj: dict[str, Any]) -> str | None:
    if "kind" in obj:
        k = obj["kind"]
        return k if k in KINDS else None
    if "a" in obj and "b" in obj and "preference" in obj:
        return "judgment"
    if "external_id" in obj and "messages" in obj:
        return "prompt"
    if "policy" in obj and "prompt" in obj:
        return "response"
    if "name" in obj and "messages" not in obj:
        return "persona"
    return None


def schemas() -> dict[str, Any]:
    """JSON Schema of every earmark interchange line kind (from the pydantic models)."""
    out = {}
    for kind, model in MODELS.items():
        s = model.model_json_schema()
        s["properties"] = {"kind": {"const": kind, "description": "optional; inferred from the keys"}} | s.get(
            "properties", {}
        )
        s["title"] = f"earmark {kind} line"
        out[kind] = s
    return out
