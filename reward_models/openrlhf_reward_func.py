"""OpenRLHF file-mode reward function: ``--remote_rm_url /path/to/openrlhf_reward_func.py``.

OpenRLHF loads this file and calls ``reward_func(queries, prompts, labels)``; it asks the earmark
reward service at ``EARMARK_REWARD_URL`` (comma-separated replicas are used in turn) with the
token in ``EARMARK_REWARD_TOKEN`` (Bearer), and returns OpenRLHF's dict: ``rewards``, ``scores``
(tensors when torch is importable, as OpenRLHF's own examples return) and ``extra_logs``.
Optional: ``EARMARK_REWARD_REGIME``, ``EARMARK_RUN_ID``, ``EARMARK_REWARD_CA``.
Self-contained on purpose (OpenRLHF imports it by path): it needs only httpx.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Any

_state: dict[str, Any] = {}
_lock = threading.Lock()


def _client() -> tuple[Any, Any]:
    import httpx

    with _lock:
        if "http" not in _state:
            urls = [u.strip() for u in os.environ.get("EARMARK_REWARD_URL", "").split(",") if u.strip()]
            if not urls:
                raise RuntimeError("set EARMARK_REWARD_URL to the reward service, e.g. http://host:5000/get_reward")
            token = os.environ.get("EARMARK_REWARD_TOKEN", "")
            _state["http"] = httpx.Client(
                headers={"Authorization": f"Bearer {token}"} if token else {},
                timeout=180,
                verify=os.environ.get("EARMARK_REWARD_CA") or True,
            )
            _state["urls"] = itertools.cycle(urls)
        return _state["http"], _state["urls"]


def reward_func(queries: list[str], prompts: list[str], labels: list[Any]) -> dict[str, Any]:
    import httpx

    http, urls = _client()
    body: dict[str, Any] = {"query": list(queries), "prompts": list(prompts), "labels": list(labels)}
    if os.environ.get("EARMARK_REWARD_REGIME"):
        body["regime"] = os.environ["EARMARK_REWARD_REGIME"]
    if os.environ.get("EARMARK_RUN_ID"):
        body["run_id"] = os.environ["EARMARK_RUN_ID"]
    delay = 0.5
    for attempt in range(6):
        with _lock:
            url = next(urls)
        try:
            r = http.post(url, json=body)
            if r.status_code not in (429, 500, 502, 503, 504):
                break
        except httpx.TransportError:
            if attempt == 5:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 20)
    if r.status_code != 200:
        raise RuntimeError(f"earmark reward service answered {r.status_code}: {r.text[:500]}")
    out = r.json()
    try:
        import torch

        rewards = torch.tensor(out["rewards"], dtype=torch.float32)
        return {
            "rewards": rewards,
            "scores": torch.tensor(out["scores"], dtype=torch.float32),
            "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in out["extra_logs"].items()},
        }
    except ImportError:
        return {"rewards": out["rewards"], "scores": out["scores"], "extra_logs": out["extra_logs"]}
