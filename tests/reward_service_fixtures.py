"""Start the reward service (pipelines.reward_service) in a thread on the test store."""

from __future__ import annotations

from typing import Any

from earmark.seaweed import free_port
from pipelines.reward_service.app import ServiceConfig
from pipelines.reward_service.limits import ServiceLimits
from pipelines.reward_service.server import ThreadedServer, conninfo_of, start_in_thread


def service_config(em: Any, scorers: list[str], regime: str = "reasoning", **limits: Any) -> ServiceConfig:
    return ServiceConfig(
        conninfo=conninfo_of(em),
        scorers=[{"name": n} for n in scorers],
        regime=regime,
        limits=ServiceLimits(**limits),
    )


def start_service(
    em: Any,
    token: str | None,
    scorers: tuple[str, ...] | list[str] = ("answer_match", "tool_calls"),
    port: int | None = None,
    **kw: Any,
) -> ThreadedServer:
    """One worker on 127.0.0.1; ``kw``: ServiceLimits fields, or ssl_certfile/ssl_keyfile."""
    tls = {k: kw.pop(k) for k in ("ssl_certfile", "ssl_keyfile") if k in kw}
    return start_in_thread(service_config(em, list(scorers), **kw), token, port=port or free_port(), **tls)
