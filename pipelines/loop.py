"""Glue of one loop round that the demo and cluster jobs share: snapshot -> DPO -> policy v+1."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from earmark.config import Settings

if TYPE_CHECKING:
    from earmark.api import Earmark

# DPO settings the demo uses on the offline policy: a few epochs over a few hundred pairs, in
# process (Ray Train's start-up costs more than the whole run at this size; the same code runs
# on N Ray Train workers with num_workers=N).
DEMO_DPO = {
    "beta": 0.1,
    "lr": 2e-4,
    "epochs": 3,
    "batch_size": 16,
    "num_workers": 0,
    "threads": 2,
    "checkpoint_every": 0,
    # the demo's recipe predates the TRL-like defaults: constant lr, evidence-weighted pairs
    "lr_scheduler_type": "constant",
    "use_weights": True,
}


# LoRA DPO on the pretrained smollm2-piper policy (`earmark demo --policy smollm2-piper`): adapters
# of rank 8 on every linear layer (the 135M base stays frozen), a LoRA-sized learning rate, a few
# epochs over the ~12 pairs a round makes (a third held out). Each round's adapter is registered as the next version.
SMOLLM2_PIPER_DPO = {
    "use_peft": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lr": 3e-4,
    "epochs": 6,
    "batch_size": 4,
    "max_length": 320,
    # a third of the train prompts' pairs held out: chosen-over-rejected accuracy before -> after
    "eval_fraction": 0.34,
}


def train_dpo_round(
    em: Earmark, policy: Any, dataset: Any, settings: Settings, **overrides: Any
) -> tuple[Any, dict[str, float]]:
    """Train on ``dataset`` from ``policy``; returns (registered policy v+1, final-step metrics)."""
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo

    cfg = DPOConfig(**{**DEMO_DPO, **overrides})
    result = run_dpo(em, cfg, dataset=dataset, base_policy=policy)
    last = result.metrics[-1] if result.metrics else {}
    keep = ("loss", "accuracy", "reward_margin", "kl", "tokens_per_s")
    out = {k: float(last[k]) for k in keep if k in last}
    held_before, held_after = (result.summary.get(k) or {} for k in ("heldout_before", "heldout_after"))
    if "accuracy" in held_after:  # eval_fraction > 0: chosen-over-rejected accuracy on held-out prompts' pairs
        out |= {
            "heldout_accuracy_before": float(held_before["accuracy"]),
            "heldout_accuracy": float(held_after["accuracy"]),
        }
        out["heldout_pairs"] = float(held_after.get("pairs", 0))
    return result.policy, out
