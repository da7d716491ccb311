"""veRL custom reward function that asks an earmark reward server (pipelines/reward_server.py).

In a veRL config::

    custom_reward_function:
      path: <site-packages>/reward_models/remote.py
      name: compute_score

with EARMARK_REWARD_URL (e.g. http://127.0.0.1:5000/get_reward) and EARMARK_REWARD_TOKEN set.
"""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **_: Any
) -> float:
    url = os.environ.get("EARMARK_REWARD_URL", "http://127.0.0.1:5000/get_reward")
    token = os.environ.get("EARMARK_REWARD_TOKEN", "")
    regime = (extra_info or {}).get("regime") or (data_source.split("/", 1)[1] if "/" in data_source else None)
    body = json.dumps(
        {"query": [solution_str], "prompts": [""], "labels": [ground_truth], **({"regime": regime} if regime else {})}
    ).encode()
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310 - URL is the operator's config
        return float(json.loads(resp.read())["rewards"][0])
