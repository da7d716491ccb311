"""Per-item scoring: the configured scorers and the regime's composition, one item at a time, so
one bad item is one error (its reward masked), never a failed batch."""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import PrivateAttr

from pipelines.reward_service.protocol import ItemResult
from reward_models.base import ScoringInput
from reward_models.composition import RewardComposition


def reference_from_label(label: Any) -> dict[str, Any] | None:
    """A trainer's label (any JSON type, numpy already turned into lists/numbers) as a scorer
    reference: a string or number is the answer (and the text for WER); a list of tool calls
    ({"name", ...}) is the expected calls; a list of scalars is the accepted answers; a dict
    with 'answer'/'text'/'tool_calls' is used as is."""
    if label is None:
        return None
    if isinstance(label, bool):
        raise ValueError("label is a boolean; send the answer itself (a number, a string or a list)")
    if isinstance(label, (int, float)):
        return {"answer": str(label)}
    if isinstance(label, str):
        return {"answer": label, "text": label}
    if isinstance(label, list):
        if label and all(isinstance(x, dict) and "name" in x for x in label):
            return {"tool_calls": label}
        if all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in label) and label:
            return {"answer": [str(x) for x in label]}
        if not label:
            return {"tool_calls": []}
        raise ValueError("label list must hold answers (strings/numbers) or tool calls ({'name', 'arguments'})")
    if isinstance(label, dict):
        for alias in ("target", "ground_truth"):  # veRL search-r1 style {"target": [...]}
            if alias in label and "answer" not in label:
                label = {**{k: v for k, v in label.items() if k != alias}, "answer": label[alias]}
        known = {"answer", "text", "tool_calls"}
        if "name" in label and not (known & set(label)):
            return {"tool_calls": [label]}
        if not known & set(label):
            raise ValueError(f"label object needs one of {sorted(known)}; got keys {sorted(label)[:10]}")
        ref = {k: label[k] for k in known if k in label}
        ans = ref.get("answer")
        if isinstance(ans, (int, float)) and not isinstance(ans, bool):
            ref["answer"] = str(ans)
        elif isinstance(ans, list):
            ref["answer"] = [str(a) for a in ans]
        return ref
    raise ValueError(f"label of type {type(label).__name__} is not supported")


# verifiable scorers and the reference key each one needs
REFERENCE_KEY = {"answer_match": "answer", "tool_calls": "tool_calls"}


class _FrozenComposition(RewardComposition):
    """The default composition with its version hashed once (compose() reads it per item)."""

    _version: str = PrivateAttr("")

    @property
    def version(self) -> str:
        if not self._version:
            self._version = RewardComposition.version.fget(self)  # type: ignore[attr-defined]
        return self._version


class ScoringEngine:
    def __init__(self, scorer_specs: list[dict[str, Any]], regime: str) -> None:
        from reward_models.base import build_scorer

        if not scorer_specs:
            raise ValueError("the reward service needs at least one scorer (--scorers)")
        self.scorers = [build_scorer(s["name"], **(s.get("config") or {})) for s in scorer_specs]
        self.regime = regime
        self.composition = _FrozenComposition()
        self.composition_version = self.composition.version
        self.scorer_versions = {s.name: s.version for s in self.scorers}
        self.scorer_versions_json = json.dumps(self.scorer_versions)
        self.all_cheap = all(s.kind == "verifiable" for s in self.scorers)
        # (scorer, the reference key it needs, the skip reason when the label lacks it)
        self._needs = [
            (s, need, f"label has no {need!r}") for s in self.scorers for need in [REFERENCE_KEY.get(s.name)]
        ]
        self._composed: dict[tuple[Any, ...], ItemResult] = {}

    def score_item(
        self, regime: str, prompt: str, query: str, label: Any, audio: tuple[Any, int] | None
    ) -> tuple[str, ItemResult]:
        """(response, result) for one item."""
        if prompt and not query.startswith(prompt):
            return query, ItemResult(
                error="query does not begin with its prompt; send query = prompt + response (OpenRLHF does)"
            )
        response = query[len(prompt) :]
        try:
            ref = reference_from_label(label)
            messages = [{"role": "user", "content": prompt}] if prompt else []
            if audio:
                item = ScoringInput(
                    regime=regime,
                    messages=messages,
                    reference=ref,
                    response_text=response.strip(),
                    audio=audio[0],
                    sample_rate=audio[1],
                )
            else:  # fields built here from a validated request: not validated again (~1.3 us an item)
                item = ScoringInput.from_trusted(
                    regime=regime, messages=messages, reference=ref, response_text=response.strip()
                )
        except ValueError as exc:
            return response, ItemResult(error=f"bad item: {_first_line(exc)}")
        dims: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for scorer, need, no_need in self._needs:
            if need and (ref is None or need not in ref):  # known in advance: no exception needed
                skipped[scorer.name] = no_need
                continue
            try:
                dims.update(scorer.score_values(item))  # the numbers only (no rationale/features)
            except ValueError as exc:  # e.g. a verifiable scorer on an item without that reference
                skipped[scorer.name] = _first_line(exc)
        return response, self._compose(regime, tuple(dims.items()), tuple(skipped.items()))

    def _compose(
        self, regime: str, dims: tuple[tuple[str, float], ...], skipped: tuple[tuple[str, str], ...]
    ) -> ItemResult:
        """Composition is a pure function of (regime, scores); verifiable scores repeat (0/1), so
        the composed result and its serialized parts are memoized (bounded)."""
        key = (regime, dims, skipped)
        hit = self._composed.get(key)
        if hit is not None:
            return hit
        d, sk = dict(dims), dict(skipped)
        try:
            bad = sorted(k for k, v in d.items() if not math.isfinite(v))
            if bad:  # never sent on (JSON has no NaN) nor composed: the item's error
                d = {k: v for k, v in d.items() if k not in bad}
                raise ValueError(f"scorer returned a non-finite score for {', '.join(bad)}")
            comp = self.composition.compose(regime, d)  # type: ignore[arg-type]
            res = ItemResult(comp.total, comp.verifiable, comp.preference, d, sk)
        except ValueError as exc:
            why = "; ".join(f"{k}: {v}" for k, v in sk.items())
            res = ItemResult(dims=d, skipped=sk, error=f"{_first_line(exc)}" + (f" ({why})" if why else ""))
        res.parts_json = json.dumps(res.parts())
        if len(self._composed) >= 4096:
            self._composed.clear()
        self._composed[key] = res
        return res


def _first_line(exc: BaseException) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: the messages, not the model dump
        return "; ".join(str(e.get("msg", "")) for e in errors())[:500]
    return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
