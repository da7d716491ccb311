"""Conversation messages in the project's common chat form.

``{"role": ..., "content": str | [{"type": "text"|"audio"|"token", ...}], "tool_calls": [...]}``.
Audio parts reference blobs by sha256 (``{"type": "audio", "audio_sha256": ...}``) once stored;
on import they may carry a file ``path`` or ``base64`` data that the import service turns into a blob.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from earmark.domain.limits import Limits

MessageRole = Literal["system", "user", "assistant", "tool"]


def check_text(value: str, what: str) -> str:
    if len(value) > Limits.MAX_TEXT_CHARS:
        raise ValueError(
            f"{what} is {len(value)} characters; the limit is {Limits.MAX_TEXT_CHARS}: split it into turns"
        )
    if "\x00" in value:
        raise ValueError(f"{what} contains a NUL byte; remove control characters from the text")
    return value


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=Limits.MAX_NAME_CHARS)
    arguments: dict[str, Any] = Field(default_factory=dict)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        return check_text(v, "text part")


class AudioPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["audio"]
    audio_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    path: str | None = None
    base64: str | None = None
    transcript: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> AudioPart:
        given = [x for x in (self.audio_sha256, self.path, self.base64) if x]
        if len(given) != 1:
            raise ValueError("an audio part needs exactly one of audio_sha256, path or base64")
        return self


class TokenPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["token"]
    ids: list[int] = Field(max_length=100_000)
    vocab: str | None = None  # which tokenizer / codec the ids belong to


ContentPart = Annotated[TextPart | AudioPart | TokenPart, Field(discriminator="type")]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: MessageRole
    content: str | list[ContentPart] = ""
    tool_calls: list[ToolCall] | None = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, v: str | list[Any]) -> str | list[Any]:
        if isinstance(v, str):
            return check_text(v, "message content")
        return v

    def text(self) -> str:
        return content_text(self.content if isinstance(self.content, str) else [p.model_dump() for p in self.content])


def content_text(content: Any) -> str:
    """The one message-to-text rule: a string as is; of typed parts, text parts and the transcripts of
    audio parts (what was said), joined by spaces; token parts and audio without a transcript add
    nothing. Every reader of message text (policies, scorers, judges, exports, the rating page) uses it."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict):
            kind = part.get("type")
            if kind == "text":
                parts.append(str(part.get("text") or ""))
            elif kind == "audio":
                parts.append(str(part.get("transcript") or ""))
    return " ".join(p for p in parts if p)


def message_text(message: dict[str, Any]) -> str:
    """Text of one stored chat message (see ``content_text``)."""
    return content_text(message.get("content"))


def validate_messages(raw: Any) -> list[Message]:
    """Validate a conversation; raises ValueError naming the bad message index."""
    if not isinstance(raw, list) or not raw:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    if len(raw) > Limits.MAX_MESSAGES:
        raise ValueError(f"{len(raw)} messages; the limit is {Limits.MAX_MESSAGES} per conversation")
    return [Message.model_validate(m) for m in raw]


def messages_to_json(messages: list[Message]) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in messages]
