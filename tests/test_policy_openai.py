"""OpenAIChatPolicy against a local stand-in for a hosted speech endpoint.

The server (stdlib http.server on 127.0.0.1, random port) speaks the chat-completions audio
protocol and answers with real eSpeak NG WAV audio; it is the only fake in these tests.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from pipelines.policy.base import Policy, SamplingParams
from pipelines.policy.openai_compat import EndpointError, OpenAIChatPolicy
from pipelines.speech.espeak import render_text, wav_bytes

KEY = "sk-test-0123456789abcdef"


@dataclass
class ServerState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_next: int = 0  # answer this many requests with 503 first


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args: Any) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        state: ServerState = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        state.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if self.path != "/v1/chat/completions":
            return self._reply(404, {"error": {"message": f"no route {self.path}"}})
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            # A careless server that echoes the credential: the client must still not leak it.
            return self._reply(401, {"error": {"message": f"invalid key in {self.headers.get('Authorization')}"}})
        if state.fail_next > 0:
            state.fail_next -= 1
            return self._reply(503, {"error": {"message": "overloaded, try again"}})
        if body["model"] == "always-500":
            return self._reply(500, {"error": {"message": "internal error"}})
        question = body["messages"][-1]["content"]
        question = question if isinstance(question, str) else "audio question"
        choices = []
        for i in range(body.get("n", 1)):
            transcript = f"Answer {i} with seed {body.get('seed')}: you asked, {question}"
            audio, sr = render_text(transcript, rate=160 + 20 * i)
            message = {
                "role": "assistant",
                "content": None,
                "audio": {
                    "id": f"audio_{i}",
                    "data": base64.b64encode(wav_bytes(audio, sr)).decode(),
                    "transcript": transcript,
                    "expires_at": 0,
                },
            }
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop", "message": message}
            if body.get("logprobs"):
                choice["logprobs"] = {
                    "content": [{"token": f"token_id:{100 + i + j}", "logprob": -0.5} for j in range(4)]
                }
            choices.append(choice)
        self._reply(
            200,
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body["model"],
                "choices": choices,
                "usage": {"prompt_tokens": 12, "completion_tokens": 30},
            },
        )


@pytest.fixture()
def server() -> Iterator[tuple[str, ServerState]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = ServerState()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.state  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _conv(text: str = "How do I fall asleep faster?") -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You are Mara, a calm librarian."}, {"role": "user", "content": text}]


def test_generate_returns_real_audio_and_transcripts(server: tuple[str, ServerState]) -> None:
    url, state = server
    policy = OpenAIChatPolicy(url, "fake-speech", api_key=KEY, voice="verse", version="2025-01")
    assert isinstance(policy, Policy) and KEY not in repr(policy)
    convs = [
        _conv(),
        _conv("Thanks!")[:1]
        + [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]},
        ],
    ]
    params = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=64)
    out = policy.generate(convs, params, num_samples=2, seed=11)
    assert [len(ss) for ss in out] == [2, 2]
    body = state.requests[0]["body"]
    assert state.requests[0]["auth"] == f"Bearer {KEY}"
    assert body["modalities"] == ["text", "audio"] and body["audio"] == {"voice": "verse", "format": "wav"}
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"], body["seed"]) == (2, 0.7, 0.9, 64, 11)
    assert state.requests[1]["body"]["messages"][-1]["content"] == [{"type": "text", "text": "Thanks!"}]
    s0, s1 = out[0]
    assert s0.text == "Answer 0 with seed 11: you asked, How do I fall asleep faster?"
    assert s0.messages == [{"role": "assistant", "content": s0.text}]
    for s in (s0, s1):
        assert s.sample_rate == 22050 and s.audio.dtype == np.float32 and len(s.audio) / s.sample_rate > 1.0
        assert np.sqrt(np.mean(s.audio**2)) > 0.01
        assert s.token_ids == [] and 0 < s.ttfa_s <= s.total_s
        assert s.extra["response_id"] == "chatcmpl-test" and s.extra["finish_reason"] == "stop"
    assert len(s1.audio) < len(s0.audio) * 1.05  # the second sample was rendered faster


def test_token_ids_from_logprobs_and_input_audio(server: tuple[str, ServerState]) -> None:
    url, state = server
    policy = OpenAIChatPolicy(url, "fake-speech", api_key=KEY, request_logprobs=True)
    wav = base64.b64encode(wav_bytes(*render_text("Hello."))).decode()
    conv = [{"role": "user", "content": [{"type": "audio", "data": wav}, {"type": "text", "text": "Answer me."}]}]
    out = policy.generate([conv], SamplingParams(), num_samples=1, seed=0)
    assert out[0][0].token_ids == [100, 101, 102, 103]
    sent = state.requests[0]["body"]
    assert sent["logprobs"] is True
    assert sent["messages"][0]["content"][0] == {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}
    with pytest.raises(ValueError, match="fetch the blob"):
        policy.generate([[{"role": "user", "content": [{"type": "audio", "blob": "sha256:abc"}]}]], SamplingParams())


def test_retries_server_errors_then_succeeds(server: tuple[str, ServerState]) -> None:
    url, state = server
    state.fail_next = 2
    policy = OpenAIChatPolicy(url, "fake-speech", api_key=KEY, max_retries=3, backoff_s=0.01)
    out = policy.generate([_conv()], SamplingParams())
    assert out[0][0].audio is not None and len(state.requests) == 3


def test_persistent_server_error_names_url_and_status(server: tuple[str, ServerState]) -> None:
    url, state = server
    policy = OpenAIChatPolicy(url, "always-500", api_key=KEY, max_retries=2, backoff_s=0.01)
    with pytest.raises(EndpointError, match="HTTP 500") as err:
        policy.generate([_conv()], SamplingParams())
    assert f"{url}/chat/completions" in str(err.value) and "3 attempts" in str(err.value)
    assert err.value.status == 500 and len(state.requests) == 3


def test_auth_error_is_not_retried_and_never_shows_the_key(server: tuple[str, ServerState]) -> None:
    url, state = server
    wrong = "sk-wrong-secret-key-42"
    policy = OpenAIChatPolicy(url, "fake-speech", api_key=wrong, backoff_s=0.01)
    with pytest.raises(EndpointError) as err:
        policy.generate([_conv()], SamplingParams())
    message = str(err.value)
    assert "HTTP 401" in message and url in message and "API key" in message
    assert wrong not in message and len(state.requests) == 1


def test_unreachable_endpoint_and_unsupported_logprobs() -> None:
    with socket.socket() as s:  # a port that was just free: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    policy = OpenAIChatPolicy(url, "m", api_key=KEY, max_retries=1, backoff_s=0.01, timeout_s=2)
    with pytest.raises(EndpointError, match="failed") as err:
        policy.generate([_conv()], SamplingParams())
    assert url in str(err.value) and "2 attempts" in str(err.value)
    with pytest.raises(NotImplementedError, match="HFCausalLMPolicy"):
        policy.logprobs([_conv()], [[1, 2, 3]])
    with pytest.raises(ValueError, match="http"):
        OpenAIChatPolicy("127.0.0.1:8000/v1", "m")
