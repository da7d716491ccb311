"""Bench scripts print one JSON document on stdout and nothing else: everything the measured code
prints (pytest's report, Ray and progress bars, child processes) goes to stderr meanwhile."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)  # file descriptor 1 too: subprocesses and C libraries write there directly
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
