"""RM vs human evaluation: pairwise accuracy, Kendall tau, calibration, reliability plot."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reward_models.evaluation import calibration_table, evaluate_against_humans, logistic_prob, reliability_plot


def test_hand_computed_metrics() -> None:
    scores = {"helpfulness": {"x": 0.9, "y": 0.1, "z": 0.5}}
    judgments = [
        {"a": "x", "b": "y", "winner": "a", "dimension": "helpfulness", "rater_pool": "expert"},
        {"a": "z", "b": "x", "winner": "b", "dimension": "helpfulness", "rater_pool": "expert"},
        {"a": "y", "b": "z", "winner": "a", "dimension": "helpfulness", "rater_pool": "crowd"},  # RM disagrees
        {"a": "x", "b": "z", "winner": "tie", "dimension": "helpfulness", "rater_pool": "crowd"},
        {"a": "x", "b": "q", "winner": "a", "dimension": "helpfulness", "rater_pool": "crowd"},  # q unscored
    ]
    rows = {(r["dimension"], r["rater_pool"]): r for r in evaluate_against_humans(scores, judgments, n_bins=5)}
    assert set(rows) == {("helpfulness", "expert"), ("helpfulness", "crowd"), ("helpfulness", "*")}
    assert rows[("helpfulness", "expert")]["pairwise_accuracy"] == 1.0
    assert rows[("helpfulness", "crowd")]["pairwise_accuracy"] == 0.0
    all_ = rows[("helpfulness", "*")]
    assert all_["n"] == 4 and all_["n_ties"] == 1 and all_["n_unscored"] == 1
    assert all_["pairwise_accuracy"] == pytest.approx(2 / 3)
    assert -1.0 <= all_["kendall_tau"] <= 1.0
    assert sum(c["n"] for c in all_["calibration"]) == 4


def test_calibrated_scores_have_low_ece_and_plot(tmp_path) -> None:
    rng = np.random.default_rng(0)
    items = {i: rng.normal() for i in range(200)}
    judgments = []
    for _ in range(4000):
        a, b = rng.choice(200, 2, replace=False)
        p = 1 / (1 + math.exp(-(items[a] - items[b])))
        judgments.append({"a": a, "b": b, "winner": "a" if rng.random() < p else "b", "dimension": "pref"})
    (row, _) = [
        r
        for r in evaluate_against_humans({"pref": items}, judgments, prob=logistic_prob(1.0))
        if r["rater_pool"] in ("*", "default")
    ]
    assert row["ece"] < 0.05 and 0.6 < row["pairwise_accuracy"] < 0.85 and row["kendall_tau"] > 0.3
    # overconfident scores (x5) are badly calibrated but rank the same
    (over, _) = evaluate_against_humans(
        {"pref": {k: 5 * v for k, v in items.items()}}, judgments, prob=logistic_prob(1.0)
    )
    assert over["ece"] > row["ece"] + 0.05 and over["pairwise_accuracy"] == row["pairwise_accuracy"]
    png = reliability_plot([row, over], tmp_path / "rel.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_calibration_table_bins() -> None:
    rows, ece = calibration_table([0.05, 0.95, 0.95, 0.5], [0, 1, 0, 0.5], n_bins=2)
    assert [r["n"] for r in rows] == [1, 3]
    assert rows[1]["observed"] == pytest.approx(0.5) and ece == pytest.approx(0.25 * 0.05 + 0.75 * abs(0.8 - 0.5))
