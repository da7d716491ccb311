"""Train the Bradley-Terry reward model on a snapshot's preference pairs (human labels by default).

Features are frozen: prosody measured on each response's audio plus a text embedding (hashed
bag-of-words by default; the shipped all-MiniLM-L6-v2 when installed). The head is registered as
the ``bt_reward`` scorer with its weights' hash in the version, so its scores carry provenance.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from earmark.domain.records import RewardModelCreate

if TYPE_CHECKING:
    from earmark.api import Earmark


def train_from_snapshot(
    em: Earmark,
    dataset: Any,
    out_dir: Path,
    *,
    sources: tuple[str, ...] = ("human", "adjudicated"),
    embedder: str = "hashed",
) -> dict[str, Any]:
    from pipelines.scoring_job import scoring_inputs
    from reward_models.bradley_terry import BTTrainConfig, save_reward_head, train_bt_reward_model
    from reward_models.features import RewardFeaturizer, hashed_bow_embedder, minilm_embedder

    rows = [r for r in em.datasets.load(dataset).to_pylist() if r["label_source"] in sources]
    if len(rows) < 4:
        raise ValueError(
            f"{dataset.name} v{dataset.version} has {len(rows)} pairs from {sources}; "
            "need at least 4 (collect more judgments or include AI labels)"
        )
    ids = sorted({r[k] for r in rows for k in ("chosen_rollout_id", "rejected_rollout_id")})
    items = {it.rollout_id: it for it in scoring_inputs(em, ids)}
    feat = RewardFeaturizer(embedder=minilm_embedder() if embedder == "minilm" else hashed_bow_embedder())
    order = list(items)
    X = dict(zip(order, feat([items[i] for i in order]), strict=True))
    xc = np.stack([X[r["chosen_rollout_id"]] for r in rows])
    xr = np.stack([X[r["rejected_rollout_id"]] for r in rows])
    cfg = BTTrainConfig(extra={"dataset": f"{dataset.name}@{dataset.version}", "sources": list(sources)})
    model, metrics = train_bt_reward_model(xc, xr, cfg)
    spec = {
        "embedder": "hashed_bow" if embedder == "hashed" else embedder,
        "dim": 256,
        "include_prosody": True,
        "include_prompt": False,
    }
    folder = save_reward_head(model, out_dir, cfg, metrics, spec)
    from reward_models.base import build_scorer

    scorer = build_scorer(
        "bt_reward", checkpoint=str(folder), **({"embedder": feat.embedder} if embedder != "hashed" else {})
    )
    row = em.scores.register_reward_model(
        RewardModelCreate(
            name=scorer.name,
            version=scorer.version,
            kind="learned",
            dimensions=list(scorer.dimensions),
            config={**scorer.config, "dataset": dataset.content_sha256},
        )
    )
    return {"reward_model_id": row.id, "version": scorer.version, "pairs": len(rows), "folder": str(folder), **metrics}
