"""The reward service's hot-path mechanisms: each answer in one write (100 Continue still sent at
once), record deadlines enforced by the watchdog rather than per-request timers, access lines
without LogRecords that read as logging's own, and unvalidated ScoringInputs equal to validated ones."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import socket
import threading
import time

import numpy as np
import psycopg
import pytest
from reward_service_fixtures import start_service

from earmark.seaweed import free_port
from pipelines.reward_service.accesslog import FORMAT, BufferedStreamHandler, SecondsCachedFormatter
from pipelines.reward_service.recorder import Recorder, RecorderUnavailable, time_ordered_uuid
from pipelines.reward_service.server import conninfo_of
from reward_models.base import ScoringInput

TOKEN = "t0ken-for-tests-0123456789-abcdefghij"
BODY = b'{"query": ["Q: 2+2? A: 4"], "prompts": ["Q: 2+2? A:"], "labels": ["4"]}'


def _read_response(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_answers_whole_and_100_continue_still_sent_first(committed_em) -> None:
    port = free_port()
    srv = start_service(committed_em, TOKEN, ["answer_match"], port=port)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            head = (
                f"POST /get_reward HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
            )
            # a client that waits for 100 Continue before its body must get it before any answer
            s.sendall((head + "Expect: 100-continue\r\n\r\n").encode())
            interim = s.recv(4096)
            assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
            s.sendall(BODY)
            first = _read_response(s)
            assert first.startswith(b"HTTP/1.1 200") and b'"rewards":[' in first
            # and the next request on the same connection (keep-alive) is answered whole too
            s.sendall((head + "\r\n").encode() + BODY)
            second = _read_response(s)
            assert second.startswith(b"HTTP/1.1 200") and b'"rewards":[' in second
        # an error answer from the same path (405) arrives complete as well
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"GET /get_reward HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = _read_response(s)
            assert reply.startswith(b"HTTP/1.1 405") and b"method_not_allowed" in reply
    finally:
        srv.shutdown()


def test_record_deadline_fails_the_wait_and_the_recorder_recovers(committed_em) -> None:
    """A COPY blocked behind a lock: the watchdog's expire() answers the waiting request (no
    per-request timer); once the lock goes, the next request commits."""
    conninfo = conninfo_of(committed_em)

    async def scenario() -> tuple[float, int]:
        rec = Recorder(conninfo)
        await rec.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        async def watchdog() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
                rec.expire(loop.time())

        dog = asyncio.create_task(watchdog())
        locker = await psycopg.AsyncConnection.connect(conninfo)
        await locker.execute("LOCK TABLE serving_events IN ACCESS EXCLUSIVE MODE")
        rid = time_ordered_uuid()
        line = f"{rid}\t0\tt\t\\N\t\\N\tu-late\treasoning\tp\tr\t\\N\t{{}}\tv\t1.0\t{{}}\t\\N\n"
        t0 = time.monotonic()
        with pytest.raises(RecorderUnavailable, match="not committed in time"):
            await rec.record(line, 1, timeout_s=0.5)
        waited = time.monotonic() - t0
        await locker.rollback()
        await locker.close()
        line2 = line.replace(rid, time_ordered_uuid()).replace("u-late", "u-next")
        await asyncio.wait_for(rec.record(line2, 1, timeout_s=30), 60)
        stop.set()
        await dog
        await rec.stop()
        async with await psycopg.AsyncConnection.connect(conninfo) as c:
            cur = await c.execute("SELECT count(*) FROM serving_events WHERE sample_uid = 'u-next'")
            row = await cur.fetchone()
        return waited, row[0] if row else 0

    waited, committed = asyncio.run(scenario())
    assert 0.4 <= waited < 20
    assert committed == 1


def test_time_ordered_request_ids() -> None:
    import uuid

    ids = []
    for _ in range(50):
        ids.append(time_ordered_uuid())
        time.sleep(0.002)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert abs((parsed[-1].int >> 80) / 1000 - time.time()) < 60  # milliseconds since the epoch


def test_access_lines_read_as_loggings_own() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream)
    handler.setFormatter(SecondsCachedFormatter())
    logger = logging.getLogger("earmark.reward.access.test")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        assert handler.takes_info_lines(logger)
        logger.info('127.0.0.1 "POST /get_reward" 200 n=8 token=env 1.2ms')
        handler.info_line(logger, '127.0.0.1 "POST /get_reward" 200 n=8 token=env 1.2ms')
        assert stream.getvalue() == ""  # buffered until flushed (the watchdog, 4x a second)
        handler.flush()
        via_logging, direct = stream.getvalue().splitlines()
        # the same line but for the time stamp, which has logging's default form in both
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
        rest = f' {os.getpid()} earmark.reward.access.test INFO 127.0.0.1 "POST /get_reward" 200 n=8 token=env 1.2ms'
        for line in (via_logging, direct):
            assert re.fullmatch(stamp + re.escape(rest), line), line
        plain = logging.Formatter(FORMAT).format(logging.makeLogRecord({"msg": "m", "name": "n", "levelname": "INFO"}))
        assert re.fullmatch(stamp + r" \d+ n INFO m", plain)  # the cached time stamp reads as logging's own
        # a second handler, a filter or another level: logging's own path is used instead
        logger.addFilter(lambda r: True)
        assert not handler.takes_info_lines(logger)
    finally:
        logger.handlers, logger.filters = [], []


def test_buffered_handler_writes_out_when_full_and_from_threads() -> None:
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, capacity=10)
    handler.setFormatter(SecondsCachedFormatter())
    logger = logging.getLogger("earmark.reward.access.full")
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        threads = [threading.Thread(target=lambda: [logger.info("line %d", i) for i in range(25)]) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert stream.getvalue().count("\n") >= 90  # written out at each 10 lines, without a flush
        handler.close()
        assert stream.getvalue().count("\n") == 100
    finally:
        logger.handlers = []


@pytest.mark.parametrize(
    "fields",
    [
        {"regime": "reasoning", "messages": [{"role": "user", "content": "2+2?"}], "reference": {"answer": "4"}},
        {"regime": "realtime", "response_text": "hello", "reference": None},
        {"response_text": "x", "persona": {"name": "p"}, "rollout_id": 7, "ttfa_s": 0.3},
    ],
)
def test_trusted_items_equal_validated_ones(fields) -> None:
    trusted, validated = ScoringInput.from_trusted(**fields), ScoringInput(**fields)
    assert trusted == validated and trusted.model_fields_set == validated.model_fields_set
    other = ScoringInput.from_trusted(**fields)
    assert other.response_tool_calls is not trusted.response_tool_calls  # fresh defaults per item


def test_trusted_items_still_validate_audio_and_unknown_fields() -> None:
    item = ScoringInput.from_trusted(audio=np.zeros(160, dtype=np.int16), sample_rate=16000)
    assert item.audio is not None and item.audio.dtype == np.float32
    with pytest.raises(ValueError, match="sample_rate"):
        ScoringInput.from_trusted(audio=np.zeros(160, dtype=np.float32))
    with pytest.raises(ValueError, match="extra"):
        ScoringInput.from_trusted(response_text="x", not_a_field=1)


def test_answer_payload_built_once_per_sequence_of_results() -> None:
    """Answers are a pure function of the composed results: an identical sequence is served from
    the cache, a different one (order, outcome) gets its own, and the cache stays bounded."""
    import json

    from pipelines.reward_service.app import _RewardPayloads
    from pipelines.reward_service.protocol import ItemResult, build_response

    right = ItemResult(1.0, 1.0, None, {"normalized_match": 1.0})
    wrong = ItemResult(0.0, 0.0, None, {"normalized_match": 0.0})
    bad = ItemResult(error="query does not begin with its prompt")
    payloads = _RewardPayloads(max_entries=3)
    first = payloads([right, wrong, bad])
    assert json.loads(first) == build_response([right, wrong, bad])
    assert payloads([right, wrong, bad]) is first  # the same sequence: the same bytes, not rebuilt
    swapped = payloads([wrong, right, bad])
    assert json.loads(swapped)["rewards"] == [0.0, 1.0, 0.0] and swapped != first
    assert json.loads(swapped)["errors"] == {"2": "query does not begin with its prompt"}
    # results equal in value but distinct objects are keyed apart (no id reuse, no false hit)
    other = ItemResult(0.5, 0.5, None, {"normalized_match": 0.5})
    assert json.loads(payloads([other]))["rewards"] == [0.5]
    for k in range(5):
        payloads([ItemResult(float(k) / 10, None, None, {})])
    assert len(payloads._cache) <= 3
