"""uvicorn's httptools protocol with each response sent in one write.

uvicorn writes a response's status line and headers, then its body, as two ``transport.write``
calls; uvloop sends each at once (TCP_NODELAY), so a small JSON answer costs the worker two send
system calls and reaches the client as two segments, often two wake-ups of its event loop. Here
each request's cycle gets a transport that holds the head until the body's write and sends both
together. The first write a cycle makes is the head (or an interim ``100 Continue``, sent at
once); every response writes its body afterwards, even an empty one; closing sends what is held.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CONTINUE = b"HTTP/1.1 100 "


class _HeadWithBody:
    """The connection's transport, for one request: the response head waits for the body."""

    __slots__ = ("_held", "_started", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._started = False

    def write(self, data: bytes) -> None:
        if self._held is not None:
            data, self._held = self._held + data, None
        elif not self._started and not data.startswith(CONTINUE):
            self._started = True
            self._held = data
            return
        self._transport.write(data)

    def close(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and not isinstance(cycle.transport, _HeadWithBody):
            cycle.transport = _HeadWithBody(self.transport)  # type: ignore[assignment]
