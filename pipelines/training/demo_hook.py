"""The DPO step of ``earmark demo``: one in-process run per round (no Ray Train start-up on a laptop).

Measured on a 2-core machine: Ray Train spends ~25 s starting its controller and worker group
before the first step, while a demo round's DPO takes a few seconds of training, so the demo trains
in-process; ``earmark train dpo --workers N`` runs the same loop on Ray Train.
"""

from __future__ import annotations

import os
from typing import Any

DEMO_DPO = {
    "beta": 0.1,
    "lr": 5e-4,
    "epochs": 3,
    "batch_size": 8,
    "checkpoint_every": 0,
    "eval_fraction": 0.2,
    "lr_scheduler_type": "constant",
    "use_weights": True,
}


def train_dpo_round(
    em: Any, policy: Any, dataset: Any, settings: Any = None, threads: int | None = None
) -> tuple[Any, dict[str, float]]:
    """Train ``policy`` on ``dataset`` -> (the registered next version, metrics for the round table).

    Metrics: the last step's ``loss``/``accuracy``/``reward_margin``/``kl`` and, when held-out pairs
    exist, ``heldout_accuracy``.
    """
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo

    cfg = DPOConfig(
        **DEMO_DPO, threads=threads or max(1, min(4, os.cpu_count() or 1)), seed=int(getattr(policy, "version", 0))
    )
    groups = {r for r in em.datasets.load(dataset).column("prompt_id").to_pylist()} if dataset.row_count else set()
    if len(groups) < 5:  # too few prompts to hold some out
        cfg = cfg.model_copy(update={"eval_fraction": 0.0})
    res = run_dpo(em, cfg, dataset=dataset, base_policy=policy, progress=True)
    final = res.summary.get("final", {})
    metrics = {k: float(final[k]) for k in ("loss", "accuracy", "reward_margin", "kl") if k in final}
    if res.summary.get("heldout_after"):
        metrics["heldout_accuracy"] = float(res.summary["heldout_after"]["accuracy"])
    return res.policy, metrics
