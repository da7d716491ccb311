"""One serving event per served score, off the request path.

Each worker process has one bounded asyncio queue and one writer task with its own connection.
A request puts its rows on the queue and waits; the writer takes everything queued (group
commit), writes it with one ``COPY serving_events FROM STDIN`` on an autocommit connection (the
COPY is its own transaction: committed when the server acknowledges it; no separate COMMIT round
trip), then wakes every waiting request.

Durability rule: a reward is answered only after its events are committed, so a crash of the
service (even kill -9) can lose unanswered requests but never an answered score. How durable
that commit is, is ``durability``:

- ``"server"`` (default): the writer's session runs with ``synchronous_commit = off``: the COPY
  is acknowledged once committed in the database server, and its WAL reaches disk within
  PostgreSQL's wal_writer_delay (200 ms) a moment later. A crash of the database host (not of the
  service) can lose the acknowledged events of the last ~0.6 s (three times wal_writer_delay,
  PostgreSQL's documented bound); it never corrupts or half-writes a group. Waiting for each
  group's WAL flush instead costs 6-13% of the queries/s at batch 8 on a 2-core host: every
  request's answer waits for the flush and the wake-up of the process behind it.
- ``"disk"``: the session's ``synchronous_commit`` stays as the server sets it (``on`` by
  default): acknowledged only once the commit's WAL is flushed to disk.

A full queue or a store that cannot commit answers 503 (retry), never an unrecorded reward. A
request waits at most its timeout: ``expire`` (called by the app's watchdog a few times a second)
fails the waits that are past it, so no timer is armed per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any, Literal, NamedTuple, get_args

log = logging.getLogger("earmark.reward.recorder")
# Under concurrent load the writer waits this long before taking a group, so that more requests
# share one COPY and one commit (PostgreSQL's commit_delay, Kafka's linger.ms): ~1.4x rows per
# commit and ~15% less database time per request at batch 8, for at most 1 ms more latency. An
# idle service (last group of one request) writes at once.
GROUP_LINGER_S = 0.001

Durability = Literal["server", "disk"]
DURABILITY_SQL = {"server": "SET synchronous_commit = off", "disk": None}
DURABILITIES: tuple[str, ...] = get_args(Durability)


def durability_problem(value: str) -> str | None:
    """What is wrong with a durability setting, or None."""
    return None if value in DURABILITIES else f"durability {value!r}: use {' or '.join(map(repr, DURABILITIES))}"


COLUMNS = (
    "request_id",
    "item_index",
    "token_name",
    "run_id",
    "global_step",
    "sample_uid",
    "regime",
    "prompt",
    "response",
    "label",
    "scorer_versions",
    "composition_version",
    "score",
    "parts",
    "error",
)
COPY_SQL = f"COPY serving_events ({', '.join(COLUMNS)}) FROM STDIN"


def copy_text(v: Any) -> str:
    """One field in PostgreSQL's COPY text format (NUL is refused before a request gets here)."""
    if v is None:
        return "\\N"
    if isinstance(v, str):
        if "\\" in v:
            v = v.replace("\\", "\\\\")
        if "\t" in v or "\n" in v or "\r" in v:
            v = v.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        return v
    return str(v)


def time_ordered_uuid() -> str:
    """A UUIDv7 (RFC 9562: 48-bit Unix milliseconds, then random bits) as text. Request ids are
    the leading primary-key column of serving_events: ids that grow with time append to the
    B-tree's right edge instead of touching a random page per request (as uuid4 would)."""
    v = (time.time_ns() // 1_000_000) << 80 | 0x7 << 76 | random.getrandbits(12) << 64 | 0b10 << 62
    h = f"{v | random.getrandbits(62):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def copy_line(fields: tuple[Any, ...]) -> str:
    """One row of ``COLUMNS`` as a line of COPY text."""
    return "\t".join(map(copy_text, fields)) + "\n"


class RecorderUnavailable(Exception):
    pass


LATE = "serving events not committed in time (store slow or down); retry"


class _Wait(NamedTuple):
    lines: str  # COPY text of one request's rows
    n_rows: int
    fut: asyncio.Future[None]
    deadline: float  # loop time after which the request is answered 503 instead


class Recorder:
    def __init__(
        self,
        conninfo: str,
        max_queued_requests: int = 4096,
        max_batch_rows: int = 20_000,
        durability: Durability = "server",
    ) -> None:
        if problem := durability_problem(durability):
            raise ValueError(problem)
        self.conninfo = conninfo
        self.durability = durability
        self.max_queued_requests = max_queued_requests
        self.max_batch_rows = max_batch_rows
        self._pending: deque[_Wait] = deque()  # FIFO: deadlines only grow along it
        self._inflight: list[_Wait] = []  # the group being written
        self._wake = asyncio.Event()
        self._last_group = 0
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self.healthy = False
        self.committed_rows = 0
        self.commits = 0  # groups committed (committed_rows / commits: the mean group size)

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._run(), name="earmark-serving-event-writer")

    async def stop(self) -> None:
        if self._task:
            # let queued requests finish first (graceful shutdown), then stop
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), 10)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close()

    async def _drained(self) -> None:
        while self._pending or self._inflight:
            await asyncio.sleep(0.01)

    async def _connect(self) -> None:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        if (sql := DURABILITY_SQL[self.durability]) is not None:
            await self._conn.execute(sql)  # for this session only, after every (re)connect
        self.healthy = True

    async def record(self, lines: str, n_rows: int, timeout_s: float) -> None:
        """Returns once the rows (``copy_line`` text, ``n_rows`` of them) are committed;
        RecorderUnavailable when they cannot be, or not within ``timeout_s``."""
        if len(self._pending) >= self.max_queued_requests:
            raise RecorderUnavailable("too many requests waiting for the store on this worker; retry")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append(_Wait(lines, n_rows, fut, loop.time() + timeout_s))
        self._wake.set()
        await fut

    def expire(self, now: float) -> int:
        """Fail the waits whose deadline has passed (the group in flight first, then the queue,
        oldest first); returns how many. Their rows may still commit later: the client was told
        to retry, as with any timeout."""
        late = [w for w in self._inflight if w.deadline < now]
        for w in self._pending:
            if w.deadline >= now:
                break
            late.append(w)
        n = 0
        for w in late:
            if not w.fut.done():
                w.fut.set_exception(RecorderUnavailable(LATE))
                n += 1
        return n

    async def _write(self, data: bytes) -> None:
        async with self._conn.cursor() as cur:
            async with cur.copy(COPY_SQL) as copy:
                await copy.write(data)  # one buffer for the whole group, not a call per row
        # leaving the block waits for COPY's completion: with autocommit that is its commit

    async def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._last_group > 1:
                await asyncio.sleep(GROUP_LINGER_S)
            batch = [pending.popleft()]
            n = batch[0].n_rows
            while pending and n < self.max_batch_rows:
                w = pending.popleft()
                batch.append(w)
                n += w.n_rows
            self._last_group = len(batch)
            live = [w for w in batch if not w.fut.done()]  # expired ones were answered 503: not written
            if live:
                self._inflight = live
                try:
                    await self._flush(live)
                finally:
                    self._inflight = []

    async def _flush(self, batch: list[_Wait]) -> None:
        try:
            if self._conn is None or self._conn.closed:
                await self._connect()
            await self._write("".join([w.lines for w in batch]).encode())
        except Exception as exc:  # noqa: BLE001 - decide per kind below
            await self._recover()
            if len(batch) > 1 and self.healthy:  # isolate a bad request: the others still commit
                for one in batch:
                    await self._flush([one])
                return
            log.error("serving events not recorded (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:300])
            for w in batch:
                if not w.fut.done():
                    w.fut.set_exception(RecorderUnavailable("the store could not record this request's scores; retry"))
            return
        self.committed_rows += sum(w.n_rows for w in batch)
        self.commits += 1
        for w in batch:
            if not w.fut.done():
                w.fut.set_result(None)

    async def _recover(self) -> None:
        try:
            if self._conn is not None and not self._conn.closed:
                await self._conn.rollback()
                self.healthy = True
                return
        except Exception:  # noqa: BLE001 - fall through to a reconnect
            pass
        self.healthy = False
        with contextlib.suppress(Exception):
            if self._conn is not None:
                await self._conn.close()
        try:
            await self._connect()
        except Exception as exc:  # noqa: BLE001
            log.error("store unreachable for serving events: %s", type(exc).__name__)
            self.healthy = False

    async def ping(self) -> bool:
        return self.healthy and self._conn is not None and not self._conn.closed
