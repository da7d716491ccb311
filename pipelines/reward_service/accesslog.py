"""The access log's handler: one line per request, written out in blocks.

A StreamHandler writes and flushes every record (a system call per request, with the time
formatted by strftime each time): ~5-9% of a reward worker's time at batch 1. This handler formats
each record when it comes (the line is fixed then) into a buffer that the app's watchdog writes
out every 0.25 s, or sooner once 256 lines are waiting, in one write; nginx's
``access_log ... buffer= flush=`` does the same. A worker killed with -9 loses at most the last
quarter second of access lines, never a serving event (those are committed before an answer).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO, Any

FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(message)s"


class SecondsCachedFormatter(logging.Formatter):
    """logging.Formatter's default time format, with the strftime done once per second."""

    def __init__(self, fmt: str | None = FORMAT, *args: Any, **kwargs: Any) -> None:
        super().__init__(fmt, *args, **kwargs)
        self._sec = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        if datefmt:
            return super().formatTime(record, datefmt)
        return self.asctime(record.created)

    def asctime(self, created: float) -> str:
        sec = int(created)
        if sec != self._sec:
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(sec))
        return f"{self._prefix},{int((created - sec) * 1000):03d}"


class BufferedStreamHandler(logging.Handler):
    def __init__(self, stream: IO[str] | None = None, capacity: int = 256) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stderr
        self.capacity = capacity
        self._lines: list[str] = []
        self._write_lock = threading.Lock()
        self._pid = os.getpid()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)
            return
        if len(self._lines) >= self.capacity:
            self.flush()

    def info_line(self, logger: logging.Logger, message: str) -> None:
        """The line ``logger.info(message)`` would give through this handler, without building a
        LogRecord (most of a record's cost; used per request by the reward route)."""
        fmt = self.formatter
        assert isinstance(fmt, SecondsCachedFormatter)
        self._lines.append(f"{fmt.asctime(time.time())} {self._pid} {logger.name} INFO {message}\n")
        if len(self._lines) >= self.capacity:
            self.flush()

    def takes_info_lines(self, logger: logging.Logger) -> bool:
        """Whether ``info_line`` gives exactly what logging would for ``logger``: this is its only
        handler, it does not propagate, nothing filters, and the format is ours."""
        fmt = self.formatter
        return (
            logger.handlers == [self]
            and not logger.propagate
            and not logger.filters
            and not self.filters
            and logger.isEnabledFor(logging.INFO)
            and self.level <= logging.INFO
            and type(fmt) is SecondsCachedFormatter
            and fmt._fmt == FORMAT
        )

    def flush(self) -> None:
        with self._write_lock:
            lines, self._lines = self._lines, []
            if lines:
                try:
                    self.stream.write("".join(lines))
                    self.stream.flush()
                except Exception:  # noqa: BLE001 - a closed stream at exit must not crash the worker
                    pass

    def close(self) -> None:
        self.flush()
        super().close()


def fast_records() -> None:
    """Skip what LogRecord gathers and our format never prints (logging's documented
    'Optimization' switches): the caller's file and line (a stack walk per record), the thread
    and the multiprocessing names. For reward worker processes only; the process id is kept."""
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    if hasattr(logging, "logAsyncioTasks"):
        logging.logAsyncioTasks = False
