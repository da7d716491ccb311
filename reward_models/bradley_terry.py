"""Bradley-Terry models: item strengths for leaderboards, and a learned pairwise reward model.

(a) ``fit_bradley_terry``: P(i beats j) = sigmoid(s_i - s_j) (Bradley & Terry 1952), fitted by
    L-BFGS on the negative log-likelihood with a small L2 penalty (keeps strengths finite when an
    item never loses, and centres them). Ties count as half a win each way.
(b) ``BTRewardHead`` + ``train_bt_reward_model``: a linear or MLP reward r(x) on frozen features,
    trained with the pairwise loss -log sigmoid(r(chosen) - r(rejected)) (Ouyang et al. 2022,
    InstructGPT, eq. 1). Inputs are standardized with training-set statistics kept as buffers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from reward_models.base import Scorer, ScoreResult, ScoringInput, register

# ------------------------------------------------------------------ (a) item strengths


def fit_bradley_terry(
    n_items: int,
    comparisons: Sequence[tuple[int, int]] | np.ndarray,
    outcomes: Sequence[float] | None = None,
    weights: Sequence[float] | None = None,
    l2: float = 1e-3,
) -> np.ndarray:
    """Log-strengths (mean 0) from pairwise comparisons.

    ``comparisons[k] = (i, j)``; ``outcomes[k]`` is 1 if i won, 0 if j won, 0.5 for a tie
    (default: all 1, i.e. pairs are (winner, loser)). ``weights`` e.g. rater-quality weights.
    """
    from scipy.optimize import minimize

    pairs = np.asarray(comparisons, dtype=np.int64).reshape(-1, 2)
    if pairs.size == 0:
        raise ValueError("no comparisons given; pass at least one (winner, loser) pair")
    if pairs.min() < 0 or pairs.max() >= n_items:
        raise ValueError(f"item index out of range [0, {n_items}); got min {pairs.min()}, max {pairs.max()}")
    y = np.ones(len(pairs)) if outcomes is None else np.asarray(outcomes, dtype=np.float64)
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.shape != (len(pairs),) or w.shape != (len(pairs),):
        raise ValueError("outcomes and weights must have one value per comparison")
    i, j = pairs[:, 0], pairs[:, 1]

    def nll(s: np.ndarray) -> tuple[float, np.ndarray]:
        d = s[i] - s[j]
        # log sigmoid(d) and log sigmoid(-d), numerically stable
        ls_pos, ls_neg = -np.logaddexp(0.0, -d), -np.logaddexp(0.0, d)
        loss = -np.sum(w * (y * ls_pos + (1 - y) * ls_neg)) + l2 * np.dot(s, s)
        g_d = -w * (y - 1.0 / (1.0 + np.exp(-d)))
        grad = np.bincount(i, g_d, n_items) - np.bincount(j, g_d, n_items) + 2 * l2 * s
        return float(loss), grad

    res = minimize(nll, np.zeros(n_items), jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9})
    s = res.x - res.x.mean()
    return s


def leaderboard(names: Sequence[str], comparisons: Sequence[tuple[int, int]], **kw: Any) -> list[dict[str, Any]]:
    """Sorted rows {name, strength, win_prob_vs_average, n_comparisons}."""
    s = fit_bradley_terry(len(names), comparisons, **kw)
    counts = np.bincount(np.asarray(comparisons, dtype=np.int64).reshape(-1), minlength=len(names))
    rows = [
        {
            "name": n,
            "strength": float(s[k]),
            "win_prob_vs_average": float(1 / (1 + math.exp(-s[k]))),
            "n_comparisons": int(counts[k]),
        }
        for k, n in enumerate(names)
    ]
    return sorted(rows, key=lambda r: -r["strength"])


# ------------------------------------------------------------------ (b) learned reward model


@dataclass
class BTTrainConfig:
    """Training of the pairwise reward head. Defaults suit a few hundred to a few thousand pairs."""

    hidden: int = 0  # 0: linear head; >0: one hidden layer MLP of this width
    epochs: int = 200
    lr: float = 1e-2
    weight_decay: float = 1e-3
    batch_size: int = 256
    holdout_fraction: float = 0.2
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # free-form provenance (feature set, data snapshot)


def _head(in_dim: int, hidden: int) -> Any:
    import torch

    class BTRewardHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.zeros(in_dim))
            self.register_buffer("std", torch.ones(in_dim))
            if hidden > 0:
                self.net = torch.nn.Sequential(
                    torch.nn.Linear(in_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1)
                )
            else:
                self.net = torch.nn.Linear(in_dim, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std).squeeze(-1)

    return BTRewardHead()


def pairwise_accuracy(r_chosen: np.ndarray, r_rejected: np.ndarray) -> float:
    """Fraction of pairs where chosen outscores rejected; ties count half."""
    d = np.asarray(r_chosen) - np.asarray(r_rejected)
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / max(len(d), 1))


def train_bt_reward_model(
    chosen: np.ndarray, rejected: np.ndarray, config: BTTrainConfig | None = None
) -> tuple[Any, dict[str, float]]:
    """Fit a reward head on (chosen, rejected) feature rows; returns (model, metrics) where metrics
    include held-out pairwise accuracy on a seeded random split."""
    import torch

    cfg = config or BTTrainConfig()
    xc, xr = np.asarray(chosen, np.float32), np.asarray(rejected, np.float32)
    if xc.shape != xr.shape or xc.ndim != 2 or len(xc) < 2:
        raise ValueError(f"chosen {xc.shape} and rejected {xr.shape} must be equal-shaped 2-D arrays, >= 2 rows")
    rng = np.random.default_rng(cfg.seed)
    perm = rng.permutation(len(xc))
    n_hold = int(round(cfg.holdout_fraction * len(xc)))
    hold, train = perm[:n_hold], perm[n_hold:]
    torch.manual_seed(cfg.seed)
    model = _head(xc.shape[1], cfg.hidden)
    both = np.concatenate([xc[train], xr[train]])
    model.mean.copy_(torch.from_numpy(both.mean(0)))
    std = both.std(0)
    # A feature constant in training (an unused hash bucket) keeps unit scale: dividing by ~0 would
    # turn any unseen value at scoring time into a huge, saturating reward.
    model.std.copy_(torch.from_numpy(np.where(std < 1e-3, 1.0, std).astype(np.float32)))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tc, tr = torch.from_numpy(xc[train]), torch.from_numpy(xr[train])
    g = torch.Generator().manual_seed(cfg.seed)
    loss_val = float("nan")
    for _ in range(cfg.epochs):
        order = torch.randperm(len(tc), generator=g)
        for b in range(0, len(tc), cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            loss = -torch.nn.functional.logsigmoid(model(tc[idx]) - model(tr[idx])).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_val = float(loss.detach())
    model.eval()
    metrics = {
        "train_loss": loss_val,
        "n_train": float(len(train)),
        "n_heldout": float(len(hold)),
        "train_accuracy": pairwise_accuracy(*_rewards(model, xc[train], xr[train])),
    }
    if len(hold):
        metrics["heldout_accuracy"] = pairwise_accuracy(*_rewards(model, xc[hold], xr[hold]))
    return model, metrics


def _rewards(model: Any, *xs: np.ndarray) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        return [model(torch.from_numpy(np.asarray(x, np.float32))).numpy() for x in xs]


def save_reward_head(
    model: Any, folder: str | Path, config: BTTrainConfig, metrics: dict[str, float], feature_spec: dict[str, Any]
) -> Path:
    """Write weights.pt + meta.json; the weights' sha256 becomes part of the scorer version."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    in_dim = int(model.mean.shape[0])
    meta = {"in_dim": in_dim, "train_config": asdict(config), "metrics": metrics, "features": feature_spec}
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    return folder


def load_reward_head(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    import torch

    folder = Path(folder)
    if not (folder / "meta.json").is_file():
        raise FileNotFoundError(f"{folder}/meta.json not found; pass a folder written by save_reward_head")
    meta = json.loads((folder / "meta.json").read_text())
    model = _head(meta["in_dim"], int(meta["train_config"]["hidden"]))
    model.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
    model.eval()
    return model, meta


@register("bt_reward")
class LearnedBTScorer(Scorer):
    """``learned_preference`` = sigmoid(r(x) / temperature) from a saved reward head; the raw
    reward is in features. Features follow meta.json's ``features`` spec (hashed BoW by default)."""

    kind = "learned"
    dimensions = ("learned_preference",)
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {"checkpoint": None, "temperature": 1.0}

    def __init__(self, embedder: Any = None, **config: Any) -> None:
        super().__init__(**config)
        if not self.config["checkpoint"]:
            raise ValueError("bt_reward needs checkpoint=<folder written by save_reward_head>")
        from reward_models.features import RewardFeaturizer, hashed_bow_embedder

        self.model, self.meta = load_reward_head(self.config["checkpoint"])
        spec = self.meta.get("features", {})
        if embedder is None and spec.get("embedder", "hashed_bow") == "hashed_bow":
            embedder = hashed_bow_embedder(int(spec.get("dim", 256)))
        if embedder is None:
            raise ValueError(f"checkpoint was trained with embedder {spec.get('embedder')!r}; pass embedder=...")
        self.featurizer = RewardFeaturizer(
            embedder,
            include_prompt=bool(spec.get("include_prompt", False)),
            include_prosody=bool(spec.get("include_prosody", True)),
        )
        self._weights_sha = hashlib.sha256((Path(self.config["checkpoint"]) / "weights.pt").read_bytes()).hexdigest()

    @property
    def version(self) -> str:
        base = super().version
        return f"{base}.{self._weights_sha[:8]}"

    def score_batch(self, items: Sequence[ScoringInput]) -> list[list[ScoreResult]]:
        if not items:
            return []
        x = self.featurizer(items)
        (r,) = _rewards(self.model, x)
        t = float(self.config["temperature"])
        return [
            [
                ScoreResult(
                    dimension="learned_preference",
                    score=float(1 / (1 + math.exp(-v / t))),
                    rationale=f"learned BT reward {v:+.3f}",
                    features={"reward": float(v)},
                )
            ]
            for v in r
        ]
