"""``OpenAIChatPolicy``: an OpenAI-compatible chat-completions endpoint that returns audio.

Works with hosted speech models and self-hosted servers (vLLM and friends) that implement
``POST {base_url}/chat/completions`` with ``modalities: ["text", "audio"]``. Requests go through
``earmark.http`` (httpx, retried by tenacity). The API key is sent as a bearer token and never
appears in errors or logs.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from earmark.http import RETRY_STATUSES, HTTPFailure, post_json
from pipelines.policy.base import Conversation, GeneratedSample, Message, SamplingParams

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF_S = 0.5


class EndpointError(RuntimeError):
    """The endpoint refused or failed a request; the message names the URL and status."""

    def __init__(self, message: str, status: int | None = None, url: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.url = url


def _to_openai_content(content: Any) -> Any:
    """Chat-form parts (earmark.domain.messages) -> OpenAI parts; audio must be inline base64 (blobs resolved by the caller)."""
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "audio":
            if not part.get("data"):
                raise ValueError(
                    "audio part has no inline 'data' (base64); fetch the blob and set data=base64 WAV "
                    "before sending it to an OpenAI-compatible endpoint"
                )
            parts.append(
                {"type": "input_audio", "input_audio": {"data": part["data"], "format": part.get("format", "wav")}}
            )
        # "token" parts are model-internal; a remote endpoint cannot take them, so they are dropped.
    return parts


def _to_openai_messages(conversation: Conversation) -> list[dict[str, Any]]:
    out = []
    for m in conversation:
        msg: dict[str, Any] = {"role": m.get("role", "user"), "content": _to_openai_content(m.get("content"))}
        for key in ("name", "tool_calls", "tool_call_id"):
            if key in m:
                msg[key] = m[key]
        out.append(msg)
    return out


def _token_ids(logprobs: Any) -> list[int]:
    """Token ids from ``choices[i].logprobs`` when the server sends them (vLLM's
    ``return_tokens_as_token_ids`` renders tokens as "token_id:123"); otherwise []."""
    if not isinstance(logprobs, dict):
        return []
    ids = []
    for entry in logprobs.get("content") or []:
        if isinstance(entry.get("token_id"), int):
            ids.append(entry["token_id"])
        elif isinstance(entry.get("token"), str) and entry["token"].startswith("token_id:"):
            try:
                ids.append(int(entry["token"].split(":", 1)[1]))
            except ValueError:
                return []
        else:
            return []  # plain token strings: ids unknown, and a partial list would mislead training
    return ids


class OpenAIChatPolicy:
    """Samples spoken responses from an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        voice: str = "alloy",
        audio_format: str = "wav",
        name: str | None = None,
        version: str = "v0",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_RETRIES,
        backoff_s: float = DEFAULT_BACKOFF_S,
        request_logprobs: bool = False,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self._api_key = api_key
        self.voice = voice
        self.audio_format = audio_format
        self.name = name or model
        self.version = version
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.request_logprobs = request_logprobs
        self.extra_body = dict(extra_body or {})

    def __repr__(self) -> str:  # keep the key out of reprs and tracebacks
        return f"OpenAIChatPolicy(url={self.url!r}, model={self.model!r}, voice={self.voice!r})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            out: dict[str, Any] = post_json(
                self.url,
                body,
                headers=headers,
                timeout_s=self.timeout_s,
                retries=self.max_retries,
                backoff_s=self.backoff_s,
                retry_statuses=RETRY_STATUSES,
                redact=self._redact,
            )
        except HTTPFailure as exc:
            if not exc.retryable:
                hint = " (check the API key)" if exc.status in (401, 403) else ""
                raise EndpointError(f"{exc}{hint}", exc.status, self.url) from None
            raise EndpointError(f"{exc} (gave up after {exc.attempts} attempts)", exc.status, self.url) from None
        return out

    def request_body(self, conversation: Conversation, params: SamplingParams, n: int, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": _to_openai_messages(conversation),
            "modalities": ["text", "audio"],
            "audio": {"voice": self.voice, "format": self.audio_format},
            "n": n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": seed,
        }
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty  # vLLM extension; others ignore it
        if params.top_k:
            body["top_k"] = params.top_k
        if self.request_logprobs:
            body["logprobs"] = True
        body.update(self.extra_body)
        return body

    def generate(
        self, conversations: list[Conversation], params: SamplingParams, num_samples: int = 1, seed: int = 0
    ) -> list[list[GeneratedSample]]:
        """One request per conversation with ``n=num_samples``; determinism is as good as the server's ``seed``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        from pipelines.speech.espeak import read_wav

        out: list[list[GeneratedSample]] = []
        for conv in conversations:
            t0 = time.perf_counter()
            reply = self._post(self.request_body(conv, params, num_samples, seed))
            choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) < num_samples:
                raise EndpointError(
                    f"POST {self.url} returned {len(choices)} choices for n={num_samples}; "
                    "the server may not support n>1: call with num_samples=1",
                    None,
                    self.url,
                )
            samples = []
            for choice in choices[:num_samples]:
                msg: Message = choice.get("message") or {}
                audio_obj = msg.get("audio") or {}
                audio = sr = None
                if audio_obj.get("data"):
                    audio, sr = read_wav(base64.b64decode(audio_obj["data"]))
                text = audio_obj.get("transcript") or msg.get("content") or ""
                elapsed = time.perf_counter() - t0
                samples.append(
                    GeneratedSample(
                        text=text,
                        messages=[{"role": "assistant", "content": text}],
                        token_ids=_token_ids(choice.get("logprobs")),
                        audio=audio,
                        sample_rate=sr,
                        ttfa_s=elapsed,  # non-streaming: audio arrives with the whole response
                        total_s=elapsed,
                        extra={
                            "finish_reason": choice.get("finish_reason"),
                            "audio_id": audio_obj.get("id"),
                            "response_id": reply.get("id"),
                            "server_model": reply.get("model"),
                            "usage": reply.get("usage"),
                            "policy": f"{self.name}@{self.version}",
                            "sampling": params.as_dict(),
                        },
                    )
                )
            out.append(samples)
        return out

    def logprobs(self, conversations: list[Conversation], responses: list[list[int]]) -> list[list[float]]:
        raise NotImplementedError(
            "OpenAIChatPolicy cannot score given responses: chat-completions has no prompt/echo log-probs. "
            "Score with a local copy of the model (HFCausalLMPolicy) or use reference-free training (no KL term)."
        )
