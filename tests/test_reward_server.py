"""The reward service: OpenRLHF-shaped requests, both auth forms, per-item errors, limits, TLS,
one serving event per served score."""

from __future__ import annotations

import base64
import io
import logging
import subprocess
import time

import httpx
import numpy as np
import pytest
from reward_service_fixtures import start_service
from sqlalchemy import text

from earmark.seaweed import free_port
from pipelines.reward_service.auth import create_token, revoke_token
from pipelines.reward_service.server import start_in_thread

TOKEN = "t0ken-for-tests-0123456789-abcdefghij"


@pytest.fixture
def server(committed_em):
    srv = start_service(committed_em, TOKEN)
    yield srv.url, committed_em
    srv.shutdown()


def _post(url, body, token=TOKEN, path="/get_reward", **kw):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(url + path, json=body, headers=headers, timeout=30, **kw)


def _events(em, where="true"):
    with em.session() as s:
        return [
            dict(r._mapping)
            for r in s.execute(text(f"SELECT * FROM serving_events WHERE {where} ORDER BY request_id, item_index"))
        ]


def test_openrlhf_request_scored_and_recorded(server) -> None:
    url, em = server
    prompts = ["Q: what is two plus two? A:", "Q: capital of France? A:"]
    r = _post(
        url + "",
        {"query": [prompts[0] + " 4", prompts[1] + " Berlin"], "prompts": prompts, "labels": ["4", "Paris"]},
        path="/get_reward?run_id=run-7&global_step=12",
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rewards"] == out["scores"] and out["rewards"][0] > out["rewards"][1]
    assert out["extra_logs"]["verifiable"] == [1.0, 0.0] and out["extra_logs"]["valid"] == [1.0, 1.0]
    assert all(v is not None for vals in out["extra_logs"].values() for v in vals)
    ev = _events(em)
    assert [(e["token_name"], e["run_id"], e["global_step"], e["item_index"]) for e in ev] == [
        ("env", "run-7", 12, 0),
        ("env", "run-7", 12, 1),
    ]
    assert ev[0]["prompt"] == prompts[0] and ev[0]["response"] == " 4" and ev[0]["label"] == "4"
    assert [e["score"] for e in ev] == out["rewards"]
    assert ev[0]["scorer_versions"].keys() == {"answer_match", "tool_calls"} and ev[0]["composition_version"]


def test_basic_auth_any_user_and_401s(server) -> None:
    url, _ = server
    body = {"query": ["#### 4"], "prompts": [""], "labels": [4]}
    ok = httpx.post(url.replace("http://", f"http://anyone:{TOKEN}@") + "/get_reward", json=body, timeout=30)
    assert ok.status_code == 200 and ok.json()["rewards"] == [1.0]
    for r in (_post(url, body, token=None), _post(url, body, token="wrong-" + TOKEN)):
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert TOKEN not in r.text and r.json()["error"]["code"] == "authentication_failed"


def test_named_tokens_work_without_restart_and_revoke(server) -> None:
    url, em = server
    tok = create_token(em, "team-a")
    assert len(tok) >= 43
    with em.session() as s:
        assert s.scalar(text("SELECT token_sha256 FROM reward_tokens WHERE name='team-a'")) != tok
    # create_token/revoke_token NOTIFY the workers: well within 10 s (the fallback reload is every 30 s)
    deadline = time.monotonic() + 10
    while (r := _post(url, {"query": ["4"], "labels": ["4"]}, token=tok)).status_code != 200:
        assert r.status_code == 401 and time.monotonic() < deadline, r.text
        time.sleep(0.1)
    assert [e["token_name"] for e in _events(em)] == ["team-a"], [
        (e["id"], e["created_at"], e["token_name"], e["prompt"], e["response"]) for e in _events(em)
    ]
    revoke_token(em, "team-a")
    deadline = time.monotonic() + 10
    while _post(url, {"query": ["4"], "labels": ["4"]}, token=tok).status_code == 200:
        assert time.monotonic() < deadline, "revoked token still accepted"
        time.sleep(0.5)


def test_revoke_reaches_a_worker_whose_listen_connection_dropped(server) -> None:
    from pipelines.reward_service.app import TOKEN_LISTENER_NAME

    url, em = server
    tok = create_token(em, "team-b")
    deadline = time.monotonic() + 10
    while (r := _post(url, {"query": ["4"], "labels": ["4"]}, token=tok)).status_code != 200:
        assert r.status_code == 401 and time.monotonic() < deadline, r.text
        time.sleep(0.1)
    with em.session() as s, s.begin():
        killed = s.scalar(
            text(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = :a AND datname = current_database()"
            ),
            {"a": TOKEN_LISTENER_NAME},
        )
    assert killed == 1
    revoke_token(em, "team-b")  # the worker reconnects, listens again and reloads: revoked
    deadline = time.monotonic() + 10
    while _post(url, {"query": ["4"], "labels": ["4"]}, token=tok).status_code == 200:
        assert time.monotonic() < deadline, "revoked token still accepted after the listener reconnected"
        time.sleep(0.2)
    assert _post(url, {"query": ["4"], "labels": ["4"]}).status_code == 200  # the env token still works


def test_bad_items_masked_not_failed(server) -> None:
    url, em = server
    r = _post(
        url,
        {
            "query": ["P1 answer 4", "something else", "P3 #### 7", "P4 x"],
            "prompts": ["P1", "P2", "P3", "P4"],
            "labels": ["4", "5", "7", None],
        },
    )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rewards"] == [1.0, 0.0, 1.0, 0.0]
    assert out["extra_logs"]["valid"] == [1.0, 0.0, 1.0, 0.0]
    assert "does not begin with its prompt" in out["errors"]["1"] and "no score" in out["errors"]["3"]
    ev = _events(em)
    assert len(ev) == 4 and ev[1]["score"] is None and ev[1]["error"] and ev[2]["score"] == 1.0


def test_same_pair_other_label_recorded_with_its_own_label(server) -> None:
    url, em = server
    a = _post(url, {"query": ["Q 42"], "prompts": ["Q"], "labels": ["42"]}).json()
    b = _post(url, {"query": ["Q 42"], "prompts": ["Q"], "labels": ["41"]}).json()
    assert a["rewards"] == [1.0] and b["rewards"] == [0.0]
    assert sorted((e["label"], e["score"]) for e in _events(em)) == [("41", 0.0), ("42", 1.0)]


def test_listing_numbers_does_not_game(server) -> None:
    url, _ = server
    out = _post(url, {"query": [" ".join(str(i) for i in range(100))], "labels": ["42"]}).json()
    assert out["rewards"] == [0.0]


def test_limits_refused_before_work(server) -> None:
    url, em = server
    cases = [
        ({"queries": ["x"]}, 400, "query"),
        ({"query": ["x"] * 513}, 413, "at most 512"),
        ({"query": ["a", "b"], "labels": ["1"]}, 400, "'labels' has 1 items for 2 queries"),
        ({"query": ["x" * 400_001]}, 413, "characters"),
        ({"query": ["x"], "audio": ["not base64!"]}, 400, "not base64"),
        ({"query": ["x"], "audio": [base64.b64encode(b"RIFFjunk").decode()]}, 400, "not a decodable audio"),
        ({"query": ["x\x00"]}, 400, "NUL"),
        ({"query": ["x"], "sample_uids": ["u\x00"]}, 400, "sample_uid 0 contains a NUL"),
        ({"query": ["x"], "run_id": "r\x00"}, 400, "run_id contains a NUL"),
        ({"query": []}, 400, "empty"),
    ]
    for body, status, msg in cases:
        r = _post(url, body)
        assert r.status_code == status and msg in r.json()["error"]["message"], (body.keys(), r.text[:300])
    big = httpx.post(
        url + "/get_reward",
        content=b"{" + b" " * (33 * 1024 * 1024) + b"}",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert big.status_code == 413
    nan = httpx.post(  # JSON's NaN extension (Python's json writes it): refused, not a 503 from the store
        url + "/get_reward",
        content=b'{"query": ["x", "y"], "labels": [NaN, [1, Infinity]]}',
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert nan.status_code == 400 and "label 0 holds NaN" in nan.json()["error"]["message"], nan.text
    assert _events(em) == []


def test_audio_accepted_when_decodable(server) -> None:
    import soundfile as sf

    url, em = server
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32), 16000, format="WAV")
    r = _post(url, {"query": ["4"], "labels": ["4"], "audio": [base64.b64encode(buf.getvalue()).decode()]})
    assert r.status_code == 200 and r.json()["rewards"] == [1.0]
    bad_rate = io.BytesIO()
    sf.write(bad_rate, np.zeros(4000, np.float32), 4000, format="WAV")
    r = _post(url, {"query": ["4"], "labels": ["4"], "audio": [base64.b64encode(bad_rate.getvalue()).decode()]})
    assert r.status_code == 400 and "sample rate 4000" in r.json()["error"]["message"]


def test_health_ready_and_one_access_line_without_secret(server, caplog) -> None:
    url, _ = server
    caplog.set_level(logging.INFO, logger="earmark.reward.access")
    assert httpx.get(url + "/health").json() == {"status": "ok"}
    assert httpx.get(url + "/ready").json()["ready"] is True
    httpx.post(url.replace("http://", f"http://u:{TOKEN}@") + "/get_reward", json={"query": ["4"], "labels": ["4"]})
    _post(url, {"query": ["4"]}, token="nope-" + TOKEN)
    lines = [r.getMessage() for r in caplog.records if r.name == "earmark.reward.access"]
    assert len(lines) == 2 and " 200 n=1 token=env " in lines[0] and " 401 " in lines[1]
    assert TOKEN not in caplog.text


def test_tls_with_self_signed_cert(committed_em, tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    srv = start_service(committed_em, TOKEN, ["answer_match"], ssl_certfile=str(cert), ssl_keyfile=str(key))
    try:
        assert srv.url.startswith("https://")
        r = httpx.post(
            srv.url + "/get_reward",
            json={"query": ["4"], "labels": ["4"]},
            headers={"Authorization": f"Bearer {TOKEN}"},
            verify=str(cert),
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["rewards"] == [1.0]
        with pytest.raises(httpx.ConnectError):  # the cert is not trusted by default
            httpx.get(srv.url + "/health", timeout=10)
    finally:
        srv.shutdown()


def test_token_rules() -> None:
    from pipelines.reward_service.auth import check_env_token

    with pytest.raises(ValueError, match="bearer token"):
        start_in_thread(None, "short")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="beyond 127.0.0.1"):
        check_env_token("x" * 20 + "abcdefgh", "0.0.0.0")
    check_env_token("abcdefghijklmnop", "127.0.0.1")
    check_env_token(TOKEN, "0.0.0.0")


def test_slow_body_times_out(committed_em) -> None:
    import socket

    port = free_port()
    srv = start_service(committed_em, TOKEN, ["answer_match"], port=port, body_read_timeout_s=1.0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(
                (
                    f"POST /get_reward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                    'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"query":'
                ).encode()
            )
            reply = s.recv(4096).decode()  # the server gives up on the body; the worker was never pinned
        assert reply.startswith("HTTP/1.1 408") and "not received within 1 s" in reply
        assert httpx.get(srv.url + "/health").status_code == 200
    finally:
        srv.shutdown()


def test_cli_token_mints_once_and_stores_hash(committed_em, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from earmark.cli.main import app

    monkeypatch.setenv("EARMARK_DATABASE_URL", committed_em.settings.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    r = CliRunner().invoke(app, ["rm", "token", "cli-team"])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert len(token) == 43
    with committed_em.session() as s:
        digest = s.scalar(text("SELECT token_sha256 FROM reward_tokens WHERE name = 'cli-team'"))
    import hashlib

    assert digest == hashlib.sha256(token.encode()).hexdigest()
    again = CliRunner().invoke(app, ["rm", "token", "cli-team"])
    assert again.exit_code == 2 and "--replace" in again.output


def test_non_finite_scorer_output_is_an_item_error() -> None:
    import json

    from pipelines.reward_service.app import _json
    from pipelines.reward_service.protocol import build_response
    from pipelines.reward_service.scoring import ScoringEngine

    e = ScoringEngine([{"name": "answer_match"}], "reasoning")
    bad = e._compose("reasoning", (("exact_match", float("nan")), ("normalized_match", 1.0)), ())
    ok = e._compose("reasoning", (("exact_match", 1.0), ("normalized_match", 1.0)), ())
    assert bad.score is None and "non-finite score for exact_match" in bad.error
    body = json.loads(_json(200, build_response([ok, bad])).body)
    assert body["rewards"] == [1.0, 0.0] and body["extra_logs"]["valid"] == [1.0, 0.0]
    assert all(v is not None for vals in body["extra_logs"].values() for v in vals)
    assert "nan" not in bad.parts_json.lower()
