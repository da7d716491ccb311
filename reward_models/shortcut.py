"""Modality-shortcut audit: can a prompt's verifiable answer be reached without its audio?

An audio prompt whose answer is printed in its text part, or that a text-only model answers
correctly with the audio removed, rewards reading instead of listening: RL on it teaches the
policy to ignore the audio. The audit runs two checks per prompt and decides retain/remove:

1. leak: the normalized reference answer occurs as a whole-word span of the prompt's text.
2. text-only: ``answer_fn`` (e.g. the policy or a judge run on text only) answers the prompt
   with every audio part replaced by a placeholder; its accuracy over ``n_samples`` tries is
   compared with ``max_text_only_accuracy``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any, Literal

from earmark.domain.messages import message_text
from reward_models.textnorm import normalize_text

AUDIO_PLACEHOLDER = "[audio removed]"
AnswerFn = Callable[[list[dict[str, Any]]], str]
Decision = Literal["retain", "remove"]


def strip_audio(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy of the conversation with audio/token parts replaced by a text placeholder."""
    out = []
    for m in messages:
        m2 = copy.deepcopy(m)
        if isinstance(m2.get("content"), list):
            m2["content"] = [
                p
                if not (isinstance(p, dict) and p.get("type") in ("audio", "token"))
                else {"type": "text", "text": AUDIO_PLACEHOLDER}
                for p in m2["content"]
            ]
        out.append(m2)
    return out


def _contains(text: str, answer: str) -> bool:
    hay, needle = normalize_text(text).split(), normalize_text(answer).split()
    n = len(needle)
    return n > 0 and any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


def audit_prompt(
    messages: list[dict[str, Any]],
    answer: str | list[str],
    answer_fn: AnswerFn | None = None,
    n_samples: int = 1,
    max_text_only_accuracy: float = 0.0,
    prompt_id: Any = None,
) -> dict[str, Any]:
    """Result dict {prompt_id, answer_in_text, text_only_answers, text_only_accuracy, decision, reasons}.

    ``max_text_only_accuracy``: the highest text-only accuracy still retained. 0.0 removes a prompt
    that a single text-only try gets right; raise it (e.g. 0.5 with n_samples=4) for multiple-choice
    or yes/no prompts, where chance alone answers correctly.
    """
    answers = [str(a) for a in answer] if isinstance(answer, (list, tuple)) else [str(answer)]
    if not any(normalize_text(a) for a in answers):
        raise ValueError(f"prompt {prompt_id}: reference answer {answer!r} is empty after normalization")
    text = "\n".join(message_text(m) for m in messages if m.get("role") != "assistant")
    leak = any(_contains(text, a) for a in answers)
    reasons = []
    if leak:
        reasons.append("reference answer appears in the prompt text")
    outs: list[str] = []
    acc: float | None = None
    if answer_fn is not None:
        stripped = strip_audio(messages)
        outs = [str(answer_fn(copy.deepcopy(stripped))) for _ in range(max(1, int(n_samples)))]
        acc = sum(any(_contains(o, a) for a in answers) for o in outs) / len(outs)
        if acc > max_text_only_accuracy:
            reasons.append(f"answered without audio in {acc:.0%} of {len(outs)} text-only tries")
    decision: Decision = "remove" if reasons else "retain"
    return {
        "prompt_id": prompt_id,
        "answer_in_text": leak,
        "text_only_answers": outs,
        "text_only_accuracy": acc,
        "decision": decision,
        "reasons": reasons,
    }


def audit_prompts(
    prompts: Iterable[dict[str, Any]], answer_fn: AnswerFn | None = None, **kw: Any
) -> list[dict[str, Any]]:
    """Audit many prompts given as {"id", "messages", "reference": {"answer": ...}}; prompts
    without a verifiable answer are retained, with a note saying they were not audited."""
    results: list[Any] = []
    for p in prompts:
        ans = (p.get("reference") or {}).get("answer")
        if ans is None:
            results.append(
                {
                    "prompt_id": p.get("id"),
                    "answer_in_text": False,
                    "text_only_answers": [],
                    "text_only_accuracy": None,
                    "decision": "retain",
                    "reasons": [],
                    "note": "no verifiable answer; not audited",
                }
            )
            continue
        results.append(audit_prompt(p["messages"], ans, answer_fn, prompt_id=p.get("id"), **kw))
    return results
