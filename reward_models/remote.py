"""Client of the earmark reward service (pipelines/reward_service) for veRL and OpenRLHF.

veRL custom reward function (``custom_reward_function.path`` = this file)::

    custom_reward_function:
      path: <site-packages>/reward_models/remote.py
      name: compute_score          # or compute_score_batch with reward_model.reward_manager=batch

Environment: ``EARMARK_REWARD_URL`` (e.g. ``https://rm.internal:5000/get_reward``; a list
separated by commas spreads calls over replicas), ``EARMARK_REWARD_TOKEN`` (sent as Bearer),
optional ``EARMARK_REWARD_REGIME``, ``EARMARK_RUN_ID``, ``EARMARK_REWARD_CA`` (CA bundle for TLS).

The regime comes from ``extra_info["regime"]``, else EARMARK_REWARD_REGIME, else the
``data_source`` mapping below (veRL's example datasets), else the server's default. Ground
truth may be any JSON type or a numpy array/scalar. Each call returns a dict with ``score`` and
the parts veRL logs (always the same keys): ``valid`` (0.0 when the item could not be scored:
its score is 0.0 and the reason is logged), ``verifiable``, ``preference`` (0.0 when absent).
Transport errors, 429 and 5xx are retried with exponential backoff; other 4xx raise at once.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import threading
from typing import Any

log = logging.getLogger(__name__)

# veRL's example data sources (examples/data_preprocess/*.py, default_compute_score) -> regime
DATA_SOURCE_REGIMES: list[tuple[str, str]] = [
    (r"gsm8k", "reasoning"),  # openai/gsm8k
    (r"math", "reasoning"),  # lighteval/MATH, DigitalLearningGmbH/MATH-lighteval, HuggingFaceH4/MATH-500, math_dapo
    (r"aime|amc|olympiad|numina|deepscaler|geometry3k|gpqa|mmlu|arc|hellaswag", "reasoning"),
    (r"searchr1|nq|hotpotqa|triviaqa|popqa|2wiki|musique|bamboogle|tool|bfcl|toolace|xlam", "reasoning"),
    (r"librispeech|common_?voice|asr", "asr"),
    (r"tts|speech_synth", "tts"),
]
RETRY_STATUS = {429, 500, 502, 503, 504}
PARTS = ("valid", "verifiable", "preference")


class RemoteRewardError(RuntimeError):
    pass


def regime_for(data_source: str | None, extra_info: dict[str, Any] | None = None) -> str | None:
    if extra_info and extra_info.get("regime"):
        return str(extra_info["regime"])
    if os.environ.get("EARMARK_REWARD_REGIME"):
        return os.environ["EARMARK_REWARD_REGIME"]
    ds = (data_source or "").lower()
    for pattern, regime in DATA_SOURCE_REGIMES:
        if re.search(pattern, ds):
            return regime
    return None


def to_json(value: Any) -> Any:
    """Ground truth as plain JSON: numpy arrays/scalars, tuples, bytes and nested dicts included."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):  # numpy array or scalar
        return to_json(value.tolist())
    if hasattr(value, "item"):
        return to_json(value.item())
    raise TypeError(f"ground truth of type {type(value).__name__} cannot be sent; use JSON types or numpy")


class RewardClient:
    """A pooled HTTP client to one or several replicas (round robin), with retries."""

    def __init__(
        self,
        urls: list[str] | str | None = None,
        token: str | None = None,
        timeout_s: float = 60.0,
        attempts: int = 6,
        verify: str | bool | None = None,
    ) -> None:
        import httpx

        raw = urls or os.environ.get("EARMARK_REWARD_URL", "http://127.0.0.1:5000/get_reward")
        self.urls = [u.strip() for u in (raw.split(",") if isinstance(raw, str) else raw) if u.strip()]
        self._next = itertools.cycle(self.urls)
        token = token if token is not None else os.environ.get("EARMARK_REWARD_TOKEN", "")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = verify if verify is not None else (os.environ.get("EARMARK_REWARD_CA") or True)
        self.http = httpx.Client(headers=headers, timeout=timeout_s, verify=verify)
        self.attempts = attempts
        self._lock = threading.Lock()

    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        import httpx
        from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, httpx.TransportError) or (
                isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in RETRY_STATUS
            )

        for attempt in Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential_jitter(initial=0.5, max=20),
            retry=retry_if_exception(retryable),
            reraise=True,
        ):
            with attempt:
                with self._lock:
                    url = next(self._next)
                r = self.http.post(url, json=body)
                if r.status_code in RETRY_STATUS:
                    r.raise_for_status()
                if r.status_code != 200:
                    try:
                        msg = r.json()["error"]["message"]
                    except Exception:  # noqa: BLE001
                        msg = r.text[:500]
                    raise RemoteRewardError(f"reward service answered {r.status_code}: {msg}")
                return r.json()
        raise AssertionError("unreachable")

    def score(
        self,
        responses: list[str],
        ground_truths: list[Any],
        regime: str | None = None,
        prompts: list[str] | None = None,
        sample_uids: list[str | None] | None = None,
        global_step: int | None = None,
        run_id: str | None = None,
    ) -> list[dict[str, float]]:
        prompts = prompts or [""] * len(responses)
        body: dict[str, Any] = {
            "query": [p + r for p, r in zip(prompts, responses, strict=True)],
            "prompts": prompts,
            "labels": [to_json(g) for g in ground_truths],
        }
        if regime:
            body["regime"] = regime
        if sample_uids and any(u is not None for u in sample_uids):
            body["sample_uids"] = [None if u is None else str(u) for u in sample_uids]
        if global_step is not None:
            body["global_step"] = int(global_step)
        if run_id := run_id or os.environ.get("EARMARK_RUN_ID"):
            body["run_id"] = run_id
        out = self.post(body)
        logs = out.get("extra_logs", {})
        for i, msg in (out.get("errors") or {}).items():
            log.warning("earmark reward item %s not scored: %s", i, msg)
        results = []
        for i, reward in enumerate(out["rewards"]):
            d = {"score": float(reward)}
            for part in PARTS:
                d[part] = float(logs[part][i]) if part in logs else 0.0
            results.append(d)
        return results


_client: RewardClient | None = None
_client_lock = threading.Lock()


def client() -> RewardClient:
    global _client
    with _client_lock:
        if _client is None:
            _client = RewardClient()
        return _client


def _extra(extra_info: Any) -> dict[str, Any]:
    return extra_info if isinstance(extra_info, dict) else {}


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, **_: Any
) -> dict[str, float]:
    """veRL's per-sample custom reward function."""
    ex = _extra(extra_info)
    return client().score(
        [solution_str],
        [ground_truth],
        regime=regime_for(data_source, ex),
        sample_uids=[ex.get("uid", ex.get("index"))],
        global_step=ex.get("global_step"),
        run_id=ex.get("run_id"),
    )[0]


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict | None] | None = None,
    **_: Any,
) -> list[dict[str, float]]:
    """veRL's batch reward function (reward_manager=batch): one request per regime present."""
    n = len(solution_strs)
    extras = [_extra(e) for e in (extra_infos if extra_infos is not None else [None] * n)]
    regimes = [regime_for(ds, ex) for ds, ex in zip(data_sources, extras, strict=True)]
    out: list[dict[str, float] | None] = [None] * n
    for regime in dict.fromkeys(regimes):
        idx = [i for i in range(n) if regimes[i] == regime]
        step = next((extras[i].get("global_step") for i in idx if extras[i].get("global_step") is not None), None)
        res = client().score(
            [solution_strs[i] for i in idx],
            [ground_truths[i] for i in idx],
            regime=regime,
            sample_uids=[extras[i].get("uid", extras[i].get("index")) for i in idx],
            global_step=step,
            run_id=next((extras[i].get("run_id") for i in idx if extras[i].get("run_id")), None),
        )
        for i, r in zip(idx, res, strict=True):
            out[i] = r
    return out  # type: ignore[return-value]
