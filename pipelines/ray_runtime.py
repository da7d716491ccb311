"""Starting or joining Ray the same way everywhere (CLI, demo, tests, benchmarks).

Local: ``ray.init()`` with no dashboard (it doubles processes and memory on a laptop), everything on
127.0.0.1. Cluster: ``EARMARK_RAY_ADDRESS``. Actors get one torch thread each via the runtime env,
so N actors on N cores do not fight over threads.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from earmark.config import Settings

ACTOR_ENV = {
    "OMP_NUM_THREADS": "1",
    # Idle OpenMP threads sleep instead of spinning: actors share cores with the driver.
    "OMP_WAIT_POLICY": "PASSIVE",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def _quiet_env() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Without this Ray binds the machine's external interface even when told 127.0.0.1.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")


def ensure_ray(settings: Settings, *, num_cpus: int | None = None) -> Any:
    """Init Ray once per process; returns the ray module."""
    import ray

    if ray.is_initialized():
        return ray
    _quiet_env()
    runtime_env = {"env_vars": {**ACTOR_ENV, **_forwarded_env()}}
    if settings.ray_address:
        ray.init(address=settings.ray_address, runtime_env=runtime_env, log_to_driver=False)
    else:
        temp_dir = os.environ.get("EARMARK_RAY_TMPDIR") or os.path.join(tempfile.gettempdir(), "earmark-ray")
        ray.init(
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            runtime_env=runtime_env,
            _temp_dir=temp_dir,
            log_to_driver=False,
            configure_logging=False,
            _node_ip_address="127.0.0.1",
        )
    return ray


def _forwarded_env() -> dict[str, str]:
    """EARMARK_* and AWS_* settings travel to actors on other nodes (secrets by env, never logged)."""
    keep = ("EARMARK_", "AWS_")
    return {k: v for k, v in os.environ.items() if k.startswith(keep)}


def shutdown() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
