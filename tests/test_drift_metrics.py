"""Drift metrics against scipy and hand-computed references, and the in-database path against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from drift_fixtures import add_scores, drift, seed_policy
from scipy import stats
from scipy.spatial.distance import jensenshannon

from earmark.drift import metrics


def test_psi_hand_computed_and_bands() -> None:
    b, c = [50, 30, 20], [30, 30, 40]
    # sum (c - b) ln(c / b) over proportions
    want = (0.3 - 0.5) * math.log(0.3 / 0.5) + 0 + (0.4 - 0.2) * math.log(0.4 / 0.2)
    assert metrics.psi(b, c) == pytest.approx(want, rel=1e-12)
    assert metrics.psi(b, b) == 0.0
    assert metrics.psi([10, 0], [5, 5]) > 1  # an emptied bin weighs heavily but stays finite
    assert [metrics.psi_band(x) for x in (0.05, 0.1, 0.2, 0.25, 1.0)] == [
        "stable",
        "moderate",
        "moderate",
        "significant",
        "significant",
    ]
    with pytest.raises(ValueError, match="same edges"):
        metrics.psi([1, 2], [1, 2, 3])


def test_js_matches_scipy_and_hand_value() -> None:
    p, q = [1, 0], [0, 1]
    assert metrics.js_distance(p, q) == pytest.approx(1.0)  # disjoint: 1 bit, distance 1
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 50, 20), rng.integers(0, 50, 20)
    assert metrics.js_distance(a, b) == pytest.approx(jensenshannon(a / a.sum(), b / b.sum(), base=2), rel=1e-12)


def test_ks_and_wasserstein_match_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.3, 1, 2500)
    d, p = metrics.ks(a, b)
    ref = stats.ks_2samp(a, b)
    assert d == pytest.approx(ref.statistic)
    assert p == pytest.approx(ref.pvalue, rel=0.05)  # asymptotic vs scipy's default (exact at this n)
    assert metrics.ks_pvalue(d, a.size, b.size) == pytest.approx(stats.ks_2samp(a, b, method="asymp").pvalue)
    assert metrics.wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a, b))
    # a pure shift moves every quantile by the same amount: W1 is that amount
    assert metrics.wasserstein([0, 1, 2], [0.5, 1.5, 2.5]) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["normal", "discrete", "skewed"])
def test_fine_grid_metrics_within_stated_bounds_of_exact(kind: str) -> None:
    rng = np.random.default_rng(2)
    if kind == "normal":
        a, b = rng.normal(0, 1, 20000), rng.normal(0.2, 1.1, 15000)
    elif kind == "discrete":
        a, b = rng.integers(1, 6, 20000).astype(float), rng.integers(2, 6, 15000).astype(float)
    else:
        a, b = rng.exponential(1.0, 20000), rng.exponential(1.3, 15000)
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    m = metrics.from_fine(*metrics.fine_arrays([a, b], lo, hi, 20 * metrics.FINE_PER_DISPLAY_BIN), lo, hi, 20, 10)
    d_exact = stats.ks_2samp(a, b).statistic
    assert m.ks_d <= d_exact + 1e-12 <= m.ks_d_max + 1e-12
    assert abs(m.wasserstein - stats.wasserstein_distance(a, b)) <= m.wasserstein_err + 1e-12
    for side, x in ((0, a), (1, b)):
        assert np.allclose(m.quantiles[side], np.quantile(x, metrics.QUANTILES), atol=m.quantile_err + 1e-12)
    if kind == "discrete":  # one value per bin: everything is exact
        assert m.ks_d == pytest.approx(d_exact) and m.wasserstein_err == 0
        assert m.wasserstein == pytest.approx(stats.wasserstein_distance(a, b))
    # JS on the 20 display bins is exactly scipy's on width_bucket counts over the pooled range
    ha, hb = (metrics.equal_width_counts(x, lo, hi, 20) for x in (a, b))
    assert m.js == pytest.approx(jensenshannon(ha / ha.sum(), hb / hb.sum(), base=2))
    # PSI on grid-located baseline deciles stays close to the textbook PSI on exact deciles
    edges = np.quantile(a, np.arange(1, 10) / 10)
    textbook = metrics.psi(metrics.quantile_bin_counts(a, edges), metrics.quantile_bin_counts(b, edges))
    assert m.psi == pytest.approx(textbook, abs=0.02 if kind != "discrete" else 0.2)


def test_in_database_summary_equals_numpy_on_same_rows(em) -> None:
    """Moments, corr, both histograms and every derived metric, computed by PostgreSQL, equal the
    numpy computation on the same rows (to float rounding)."""
    world = seed_policy(em, n_prompts=15, k=8)
    rng = np.random.default_rng(3)
    base, cand = world["rollouts"][0], world["rollouts"][1]
    scores = {rid: float(rng.normal(0.5, 0.1)) for rid in base} | {rid: float(rng.normal(0.6, 0.15)) for rid in cand}
    add_scores(em, "judge", "generative", "helpfulness", scores)
    s = drift(em).compare(0, 1, policy="speech")
    (d,) = s.dimensions
    xb, xc = np.array([scores[r] for r in base]), np.array([scores[r] for r in cand])
    lo, hi = min(xb.min(), xc.min()), max(xb.max(), xc.max())
    ref = metrics.from_fine(*metrics.fine_arrays([xb, xc], lo, hi, 20 * metrics.FINE_PER_DISPLAY_BIN), lo, hi, 20, 10)
    for name in ("psi", "js", "ks_d", "wasserstein"):
        assert getattr(d, name) == pytest.approx(getattr(ref, name), abs=1e-12), name
    assert np.array_equal(d.binned.hist, ref.hist)
    words = np.array([world["words"][r] for r in cand], float)
    want = metrics.sample_stats(xc, np.array([world["duration"][r] for r in cand]), words * 5 - 1)
    for k in ("n", "mean", "sd", "min", "max", "corr_duration", "corr_length"):
        assert d.candidate[k] == pytest.approx(want[k], rel=1e-9), k
    assert d.ks_p == pytest.approx(metrics.ks_pvalue(ref.ks_d, xb.size, xc.size))
