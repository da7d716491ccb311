"""The one HTTP client path: JSON POSTs on httpx, retried by tenacity.

Transient failures (connection errors, timeouts, and the statuses in ``RETRY_STATUSES``) are
retried with exponential backoff; anything else fails at once. Callers turn ``HTTPFailure`` into
their own error type; ``redact`` keeps secrets (API keys) out of messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_ERROR_BODY = 500


class HTTPFailure(Exception):
    def __init__(self, message: str, status: int | None, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.attempts = 1


def _same(text: str) -> str:
    return text


def post_json(
    url: str,
    body: Any,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    retries: int = 0,
    backoff_s: float = 0.5,
    max_backoff_s: float = 30.0,
    retry_statuses: frozenset[int] = RETRY_STATUSES,
    redact: Callable[[str], str] = _same,
) -> Any:
    """POST ``body`` as JSON and return the decoded JSON reply; ``retries`` extra attempts, waiting
    ``backoff_s``, 2x, 4x, ... between them. Raises ``HTTPFailure`` (``attempts`` says how many)."""
    hdrs = {"Accept": "application/json", **(headers or {})}
    attempts = 0

    def once() -> Any:
        nonlocal attempts
        attempts += 1
        try:
            resp = httpx.post(url, json=body, headers=hdrs, timeout=timeout_s)
        except httpx.TransportError as exc:
            reason = redact(str(exc)) or type(exc).__name__
            raise HTTPFailure(f"POST {url} failed: {reason}", None, True) from None
        if resp.status_code >= 400:
            detail = redact(resp.text[:MAX_ERROR_BODY])
            status = resp.status_code
            raise HTTPFailure(f"POST {url} returned HTTP {status}: {detail}", status, status in retry_statuses)
        try:
            return resp.json()
        except ValueError as exc:
            raise HTTPFailure(f"POST {url} returned invalid JSON: {exc}", None, False) from None

    retrying = Retrying(
        stop=stop_after_attempt(retries + 1),
        wait=wait_exponential(multiplier=backoff_s, max=max_backoff_s),
        retry=retry_if_exception(lambda e: isinstance(e, HTTPFailure) and e.retryable),
        reraise=True,
    )
    try:
        return retrying(once)
    except HTTPFailure as exc:
        exc.attempts = attempts
        raise
