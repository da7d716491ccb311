"""Wire format. OpenRLHF's remote reward model, exactly:

in:  ``{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [label, ...]}``
out: ``{"rewards": [float, ...], "scores": [float, ...], "extra_logs": {name: [float, ...]}}``

Every list has one float per query and never a null: an item that could not be scored gets reward
0.0, ``extra_logs["valid"] = 0.0`` and its message under ``errors[str(index)]``; a part scored for
only some items is sent as 0.0 with a ``<part>_mask`` list (1.0 where present). Optional fields a
trainer may add (stock OpenRLHF sends none): ``regime``, ``run_id``, ``global_step``,
``sample_uids`` (run id and step may also come as URL query parameters), ``audio`` (base64 WAV).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipelines.reward_service.recorder import copy_text
from reward_models.base import Regime


class RewardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: list[str] = Field(description="prompt + response per item (OpenRLHF)")
    prompts: list[str] | None = Field(None, description="the prompt each query begins with")
    labels: list[Any] | None = Field(None, description="reference per item: any JSON (answer, list, tool calls)")
    audio: list[str | None] | None = Field(None, description="base64 WAV of each response, or null")
    regime: Regime | None = Field(None, description="composition weights; default: the server's")
    run_id: str | None = Field(None, max_length=200)
    global_step: int | None = Field(None, ge=0)
    sample_uids: list[str | None] | None = Field(None, description="the trainer's id of each sample")


class ItemResult:
    __slots__ = (
        "score",
        "verifiable",
        "preference",
        "dims",
        "skipped",
        "error",
        "parts_json",
        "_parts_copy",
        "_score_copy",
    )

    def __init__(
        self,
        score: float | None = None,
        verifiable: float | None = None,
        preference: float | None = None,
        dims: dict[str, float] | None = None,
        skipped: dict[str, str] | None = None,
        error: str | None = None,
    ) -> None:
        self.score, self.verifiable, self.preference = score, verifiable, preference
        self.dims, self.skipped, self.error = dims or {}, skipped or {}, error
        self.parts_json: str | None = None  # serialized parts, set once (results may be shared)
        self._parts_copy: str | None = None
        self._score_copy: str | None = None

    def score_copy(self) -> str:
        """The score as a field of COPY text, made once (a memoized result serves many items)."""
        if self._score_copy is None:
            self._score_copy = copy_text(self.score)
        return self._score_copy

    def parts_copy(self) -> str:
        """The parts as a field of COPY text, made once (a memoized result serves many items)."""
        if self._parts_copy is None:
            self._parts_copy = copy_text(self.parts_json or json.dumps(self.parts()))
        return self._parts_copy

    def parts(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dims": self.dims}
        if self.verifiable is not None:
            out["verifiable"] = self.verifiable
        if self.preference is not None:
            out["preference"] = self.preference
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def _masked(values: list[float | None]) -> tuple[list[float], list[float] | None]:
    if None not in values:
        return values, None  # type: ignore[return-value]
    return [0.0 if v is None else v for v in values], [0.0 if v is None else 1.0 for v in values]


def build_response(results: list[ItemResult]) -> dict[str, Any]:
    """Scores are finite floats (ScoringEngine turns a non-finite one into the item's error)."""
    rewards = [0.0 if r.score is None else r.score for r in results]
    logs: dict[str, list[float]] = {"valid": [0.0 if r.error else 1.0 for r in results]}
    parts: dict[str, list[float | None]] = {
        "verifiable": [r.verifiable for r in results],
        "preference": [r.preference for r in results],
    }
    for name in sorted({d for r in {id(r): r for r in results}.values() for d in r.dims}):
        if name not in parts:
            parts[name] = [r.dims.get(name) for r in results]
    n = len(results)
    for name, vals in parts.items():
        if vals.count(None) == n:
            continue  # a part no item has is left out
        filled, mask = _masked(vals)
        logs[name] = filled
        if mask is not None:
            logs[name + "_mask"] = mask
    out: dict[str, Any] = {"rewards": rewards, "scores": list(rewards), "extra_logs": logs}
    errors = {str(i): r.error for i, r in enumerate(results) if r.error}
    if errors:
        out["errors"] = errors
    return out
