"""The reward endpoint: OpenRLHF-shaped requests, bearer token, provenance in the store."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from sqlalchemy import text

from earmark.seaweed import free_port
from pipelines.reward_server import RewardService, serve

TOKEN = "t0ken-for-tests-0123456789"


@pytest.fixture
def server(committed_em):
    svc = RewardService(committed_em, [{"name": "answer_match"}, {"name": "prosody"}], regime="reasoning")
    port = free_port()
    srv = serve(svc, TOKEN, port=port)
    yield f"http://127.0.0.1:{port}/get_reward", committed_em
    srv.shutdown()


def _post(url, body, token=TOKEN):
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_openrlhf_request_scored_and_recorded(server) -> None:
    url, em = server
    prompts = ["Q: what is two plus two? A:", "Q: capital of France? A:"]
    out = _post(
        url, {"query": [prompts[0] + " 4", prompts[1] + " Berlin"], "prompts": prompts, "labels": ["4", "Paris"]}
    )
    assert len(out["rewards"]) == 2 and out["rewards"][0] > out["rewards"][1]
    assert out["extra_logs"]["verifiable"] == [1.0, 0.0]
    with em.session() as s:
        rows = s.execute(
            text(
                "SELECT p.name, rm.name, rs.dimension, rs.score FROM reward_scores rs "
                "JOIN reward_models rm ON rm.id = rs.reward_model_id JOIN rollouts r ON r.id = rs.rollout_id "
                "JOIN policies p ON p.id = r.policy_id ORDER BY rs.id"
            )
        ).all()
    assert {r[0] for r in rows} == {"external-openrlhf"}
    assert {(r[1], r[2]) for r in rows} >= {("answer_match", "normalized_match"), ("composition", "total")}


def test_audio_takes_part_when_sent(server) -> None:
    from pipelines.speech.espeak import render_text, wav_bytes

    url, _ = server
    audio, sr = render_text("four", rate=150, pitch=40)
    out = _post(
        url,
        {"query": ["4"], "prompts": [""], "labels": ["4"], "audio": [base64.b64encode(wav_bytes(audio, sr)).decode()]},
    )
    assert len(out["rewards"]) == 1


def test_refuses_without_token_and_bad_bodies(server) -> None:
    url, em = server
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(url, {"query": ["x"]}, token="wrong")
    assert exc.value.code == 401
    with pytest.raises(urllib.error.HTTPError) as exc:
        _post(url, {"queries": ["x"]})
    assert exc.value.code == 400 and "query" in exc.value.read().decode()
    with em.session() as s:
        assert s.scalar(text("SELECT count(*) FROM rollouts")) == 0


def test_token_is_required_and_long() -> None:
    with pytest.raises(ValueError, match="bearer token"):
        serve(None, "short")  # type: ignore[arg-type]
