"""One serving event per served score, off the request path.

Each worker process has one bounded asyncio queue and one writer task with its own connection.
A request puts its rows on the queue and waits; the writer takes everything queued (group
commit), writes it with one ``COPY serving_events FROM STDIN`` on an autocommit connection (the
COPY is its own transaction: committed, WAL flushed, when the server acknowledges it; no separate
COMMIT round trip), then wakes every waiting request. Durability rule: a reward is answered only after its events are committed, so
a crash (even kill -9) can lose unanswered requests but never an answered score. A full queue
or a store that cannot commit answers 503 (retry), never an unrecorded reward.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("earmark.reward.recorder")

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


def copy_line(fields: tuple[Any, ...]) -> str:
    """One row of ``COLUMNS`` as a line of COPY text."""
    return "\t".join(map(copy_text, fields)) + "\n"


class RecorderUnavailable(Exception):
    pass


class Recorder:
    def __init__(self, conninfo: str, max_queued_requests: int = 4096, max_batch_rows: int = 20_000) -> None:
        self.conninfo = conninfo
        # (COPY text of one request's rows, row count, the request's future)
        self.queue: asyncio.Queue[tuple[str, int, asyncio.Future[None]]] = asyncio.Queue(max_queued_requests)
        self.max_batch_rows = max_batch_rows
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
        while not self.queue.empty():
            await asyncio.sleep(0.01)

    async def _connect(self) -> None:
        import psycopg

        self._conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
        self.healthy = True

    async def record(self, lines: str, n_rows: int, timeout_s: float) -> None:
        """Returns once the rows (``copy_line`` text, ``n_rows`` of them) are committed;
        RecorderUnavailable when they cannot be."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((lines, n_rows, fut))
        except asyncio.QueueFull:
            raise RecorderUnavailable("too many requests waiting for the store on this worker; retry") from None
        try:
            async with asyncio.timeout(timeout_s):  # no extra task per request (unlike wait_for)
                await fut
        except TimeoutError:
            raise RecorderUnavailable(
                f"serving events not committed within {timeout_s:.0f} s (store slow or down); retry"
            ) from None

    async def _write(self, data: bytes) -> None:
        async with self._conn.cursor() as cur:
            async with cur.copy(COPY_SQL) as copy:
                await copy.write(data)  # one buffer for the whole group, not a call per row
        # leaving the block waits for COPY's completion: with autocommit that is its commit

    async def _run(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            n = first[1]
            while n < self.max_batch_rows and not self.queue.empty():
                item = self.queue.get_nowait()
                batch.append(item)
                n += item[1]
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[str, int, asyncio.Future[None]]]) -> None:
        try:
            if self._conn is None or self._conn.closed:
                await self._connect()
            await self._write("".join([lines for lines, _, _ in batch]).encode())
        except Exception as exc:  # noqa: BLE001 - decide per kind below
            await self._recover()
            if len(batch) > 1 and self.healthy:  # isolate a bad request: the others still commit
                for one in batch:
                    await self._flush([one])
                return
            log.error("serving events not recorded (%s: %s)", type(exc).__name__, str(exc).splitlines()[0][:300])
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(RecorderUnavailable("the store could not record this request's scores; retry"))
            return
        self.committed_rows += sum(n for _, n, _ in batch)
        self.commits += 1
        for _, _, fut in batch:
            if not fut.done():
                fut.set_result(None)

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
