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
# epochs over the ~18 pairs a round makes. Each round's adapter is registered as the next version.
SMOLLM2_PIPER_DPO = {
    "use_peft": True,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "lr": 2e-4,
    "epochs": 4,
    "batch_size": 8,
    "max_length": 320,
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
    return result.policy, {k: float(last[k]) for k in keep if k in last}
