"""Run the modality-shortcut audit over prompts with a verifiable answer and store the decisions.

The text-only probe is a real model run: the policy answers each prompt with its audio removed
(``reward_models.shortcut.strip_audio``); a prompt it still answers, or whose answer is printed in
its text, is tagged ``shortcut:remove`` and datasets leave it out by default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reward_models.shortcut import audit_prompts

if TYPE_CHECKING:
    from earmark.api import Earmark


def text_only_answer_fn(policy: Any, max_new_tokens: int = 32):  # noqa: ANN201
    from pipelines.policy.base import SamplingParams
    from pipelines.rollouts import for_policy

    def answer(messages: list[dict[str, Any]]) -> str:
        out = policy.generate([for_policy(messages)], SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens))
        return out[0][0].text

    return answer


def run_shortcut_audit(em: Earmark, *, policy: Any = None, regime: str | None = None, n_samples: int = 1) -> list[dict]:
    prompts = [
        {"id": p.id, "messages": p.messages, "reference": p.reference}
        for p in em.catalog.prompts(regime=regime)
        if (p.reference or {}).get("answer") is not None
    ]
    results = audit_prompts(prompts, text_only_answer_fn(policy) if policy is not None else None, n_samples=n_samples)
    em.catalog.record_shortcut_audit([r for r in results if r.get("prompt_id") is not None])
    return results
