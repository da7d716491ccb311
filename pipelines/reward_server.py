"""Compatibility entry points for the reward endpoint; the service is ``pipelines.reward_service``
(Starlette on uvicorn). ``RewardService`` + ``serve`` start one worker in a background thread, as
the http.server version did, with the token given here accepted as Bearer or HTTP Basic password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipelines.reward_service.app import ServiceConfig
from pipelines.reward_service.auth import check_env_token
from pipelines.reward_service.limits import ServiceLimits
from pipelines.reward_service.server import ThreadedServer, conninfo_of, start_in_thread

if TYPE_CHECKING:
    from earmark.api import Earmark


class RewardService:
    """The configuration of one reward service on the store ``em`` talks to."""

    def __init__(
        self, em: Earmark, scorer_specs: list[dict[str, Any]], regime: str = "realtime", **limits: Any
    ) -> None:
        self.config = ServiceConfig(
            conninfo=conninfo_of(em), scorers=scorer_specs, regime=regime, limits=ServiceLimits(**limits)
        )


def serve(
    service: RewardService, token: str | None, host: str = "127.0.0.1", port: int = 5000, **tls: Any
) -> ThreadedServer:
    if token is not None:
        check_env_token(token, host)  # before touching the service: the one bind rule (auth.py)
    return start_in_thread(service.config, token, host=host, port=port, **tls)
