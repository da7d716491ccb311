"""How well does a reward model agree with humans? Pairwise accuracy, Kendall tau, calibration.

Inputs are plain rows so that they come straight from store queries:

* scores: ``{dimension: {item_id: score}}`` (RM scores, higher is better)
* judgments: ``[{"a": item_id, "b": item_id, "winner": "a"|"b"|"tie", "dimension": str,
  "rater_pool": str}]`` (human pairwise labels; ``rater_pool`` optional)

Metrics per (dimension, rater pool) and per dimension over all pools ("*"):

* pairwise accuracy over non-tied human labels (an RM tie counts half);
* Kendall tau-b (scipy) between the RM score difference s_a - s_b and the human label in
  {+1, 0, -1}; tau-b handles the many ties of the label side;
* calibration: the RM's predicted P(a preferred) binned against the human rate of preferring a,
  with the expected calibration error (ECE, Naeini et al. 2015).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

Scores = Mapping[str, Mapping[Any, float]]
ALL_POOLS = "*"


def linear_prob(d: float) -> float:
    """P(a preferred) for scores in [0, 1]: 0.5 + (s_a - s_b) / 2."""
    return min(1.0, max(0.0, 0.5 + d / 2))


def logistic_prob(temperature: float = 1.0) -> Callable[[float], float]:
    """P(a preferred) = sigmoid((s_a - s_b) / T): for Bradley-Terry rewards (T = 1)."""
    return lambda d: 1.0 / (1.0 + math.exp(-d / temperature))


def _label(winner: str) -> float:
    try:
        return {"a": 1.0, "b": -1.0, "tie": 0.0}[winner]
    except KeyError:
        raise ValueError(f"judgment winner {winner!r} is not 'a', 'b' or 'tie'") from None


def calibration_table(
    pred: Sequence[float], outcome: Sequence[float] | np.ndarray, n_bins: int = 10
) -> tuple[list[dict], float]:
    """Rows {bin_lo, bin_hi, n, mean_predicted, observed} and the ECE. ``outcome`` is 1 when a was
    preferred, 0 when b was, 0.5 for a tie."""
    p, y = np.asarray(pred, float), np.asarray(outcome, float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    rows, ece = [], 0.0
    for b in range(n_bins):
        m = idx == b
        n = int(m.sum())
        row = {
            "bin_lo": float(edges[b]),
            "bin_hi": float(edges[b + 1]),
            "n": n,
            "mean_predicted": float(p[m].mean()) if n else None,
            "observed": float(y[m].mean()) if n else None,
        }
        if n:
            ece += n / len(p) * abs(row["mean_predicted"] - row["observed"])  # type: ignore[operator]
        rows.append(row)
    return rows, float(ece)


def _metrics(diffs: list[float], labels: list[float], prob: Callable[[float], float], n_bins: int) -> dict[str, Any]:
    from scipy.stats import kendalltau

    d, lab = np.asarray(diffs, float), np.asarray(labels, float)
    decided = lab != 0
    if decided.any():
        agree = np.sign(d[decided]) == np.sign(lab[decided])
        acc = float((agree.sum() + 0.5 * (d[decided] == 0).sum()) / decided.sum())
    else:
        acc = float("nan")
    if len(d) >= 2 and np.ptp(d) > 0 and np.ptp(lab) > 0:
        res = kendalltau(d, lab)
        tau, tau_p = float(res.statistic), float(res.pvalue)
    else:  # undefined when either side is constant
        tau, tau_p = float("nan"), float("nan")
    table, ece = calibration_table([prob(x) for x in d], (lab + 1) / 2, n_bins)
    return {
        "n": int(len(d)),
        "n_ties": int((~decided).sum()),
        "pairwise_accuracy": acc,
        "kendall_tau": tau,
        "kendall_p": tau_p,
        "ece": ece,
        "calibration": table,
    }


def evaluate_against_humans(
    scores: Scores,
    judgments: Iterable[Mapping[str, Any]],
    n_bins: int = 10,
    prob: Callable[[float], float] = linear_prob,
) -> list[dict[str, Any]]:
    """One row per (dimension, rater_pool) and per (dimension, '*'). Judgments whose items have no
    RM score on that dimension are counted in ``n_unscored`` and skipped."""
    groups: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    unscored: dict[tuple[str, str], int] = {}
    for j in judgments:
        dim = str(j["dimension"])
        pool = str(j.get("rater_pool") or "default")
        dim_scores = scores.get(dim, {})
        label = _label(str(j["winner"]))
        for key in ((dim, pool), (dim, ALL_POOLS)):
            if j["a"] not in dim_scores or j["b"] not in dim_scores:
                unscored[key] = unscored.get(key, 0) + 1
                continue
            dl = groups.setdefault(key, ([], []))
            dl[0].append(float(dim_scores[j["a"]]) - float(dim_scores[j["b"]]))
            dl[1].append(label)
    rows = []
    for (dim, pool), (diffs, labels) in sorted(groups.items()):
        rows.append(
            {
                "dimension": dim,
                "rater_pool": pool,
                "n_unscored": unscored.get((dim, pool), 0),
                **_metrics(diffs, labels, prob, n_bins),
            }
        )
    return rows


def reliability_plot(
    rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "Reward model calibration"
) -> Path:
    """Reliability diagram (predicted vs observed P(a preferred)) for the given evaluation rows,
    one line per (dimension, pool), written as a PNG. Needs matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # headless: no display on workers or CI
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise RuntimeError("reliability_plot needs matplotlib; pip install matplotlib") from e
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=100)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for r in rows:
        pts = [(c["mean_predicted"], c["observed"]) for c in r["calibration"] if c["n"]]
        if pts:
            x, y = zip(*pts)
            ax.plot(x, y, marker="o", label=f"{r['dimension']} / {r['rater_pool']} (ECE {r['ece']:.2f})")
    ax.set(
        xlim=(0, 1), ylim=(0, 1), xlabel="RM predicted P(a preferred)", ylabel="human rate of preferring a", title=title
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
