"""Server-side run times of the app's scripts, logged at DEBUG (``EARMARK_LOG_LEVEL=DEBUG``).

``timed("app")`` wraps a whole script run, ``timed("rate-item")`` the rate page's item fragment
(logged as ``app/rate-item`` inside a full run, as ``rate-item`` when only the fragment reran);
each logs one line ``earmark.ui.timing <name> <wall> ms cpu <cpu> ms`` to stderr (cpu: the
script thread's own CPU time, which other processes' load inflates far less than wall time), which ``bench/annotation.py``
reads from the server's log. Nothing is logged at the default level.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("earmark.ui.timing")
_stack = threading.local()  # names of the timed blocks this thread is inside: "app/rate-item"


def configure(level: str) -> None:
    """Send the timing lines to stderr when the configured level is DEBUG (once per process)."""
    if level.upper() != "DEBUG" or log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False


@contextmanager
def timed(name: str) -> Iterator[None]:
    """Log how long the block took (also when it ends in st.stop() or st.rerun(), which raise)."""
    if not log.isEnabledFor(logging.DEBUG):
        yield
        return
    outer = getattr(_stack, "names", ())
    _stack.names = (*outer, name)
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        yield
    finally:
        _stack.names = outer
        log.debug(
            "%s %.2f ms cpu %.2f ms",
            "/".join((*outer, name)),
            (time.perf_counter() - t0) * 1000,
            (time.thread_time() - c0) * 1000,
        )
