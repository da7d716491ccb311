"""Distribution-shift metrics between a baseline and a candidate sample: PSI, KS, Jensen-Shannon, Wasserstein.

Two ways in. The in-database path (``earmark.drift.sql``) sends only a fine histogram per key
out of PostgreSQL; ``from_fine`` derives every metric from it, with error bounds where binning
costs precision (KS, Wasserstein, quantiles). The sample path (``ks``, ``wasserstein``,
``sample_stats``) works on raw arrays with scipy: the reference the SQL path is tested against.

References
- PSI: Siddiqi, *Credit Risk Scorecards* (2006), ch. 8: below 0.1 no significant change,
  0.1-0.25 moderate, 0.25 and above a significant shift.
- KS: two-sample Kolmogorov-Smirnov; p-values as ``scipy.stats.ks_2samp(method="asymp")``.
- Jensen-Shannon distance (square root of the divergence, base 2, so it lies in [0, 1]) as
  ``scipy.spatial.distance.jensenshannon``.
- Wasserstein-1 (earth mover's) distance as ``scipy.stats.wasserstein_distance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

PSI_WARN = 0.1
PSI_ALERT = 0.25
# An empty bin would make PSI infinite; a tiny floor keeps it finite while a bin that empties
# still contributes a large term (the usual practice in scorecard monitoring).
PSI_EPSILON = 1e-4


def _proportions(counts: Sequence[float]) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or c.size == 0:
        raise ValueError("histogram counts must be a non-empty 1-D sequence; pass one count per bin")
    if (c < 0).any():
        raise ValueError("histogram counts must be >= 0")
    total = c.sum()
    if total <= 0:
        raise ValueError("histogram has no observations; both samples need at least one score")
    return c / total


def psi(baseline_counts: Sequence[float], candidate_counts: Sequence[float], eps: float = PSI_EPSILON) -> float:
    """Population stability index over the same bins: sum (c - b) * ln(c / b) of bin proportions."""
    b, c = _proportions(baseline_counts), _proportions(candidate_counts)
    if b.shape != c.shape:
        raise ValueError(f"baseline has {b.size} bins and candidate {c.size}; bin both on the same edges")
    b, c = np.maximum(b, eps), np.maximum(c, eps)
    return float(np.sum((c - b) * np.log(c / b)))


def psi_band(value: float | None, warn: float = PSI_WARN, alert: float = PSI_ALERT) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "significant" if value >= alert else "moderate" if value >= warn else "stable"


def psi_pvalue(value: float, n: int, m: int, bins: int) -> float:
    """P-value of a PSI under "same distribution": PSI / (1/n + 1/m) is asymptotically
    chi-square with bins - 1 degrees of freedom (Yurdakul, 2018, "Statistical Properties of the
    Population Stability Index"). With 60 scores a side, PSI above 0.25 happens by chance alone."""
    if n <= 0 or m <= 0 or bins < 2:
        return float("nan")
    return float(stats.chi2.sf(value / (1 / n + 1 / m), bins - 1))


def welch_pvalue(
    mean_a: float, sd_a: float | None, n_a: int, mean_b: float, sd_b: float | None, n_b: int
) -> float | None:
    """Two-sided Welch t-test p-value from summary statistics (scipy.stats.ttest_ind_from_stats)."""
    if not (sd_a and sd_b) or n_a < 2 or n_b < 2:
        return None
    return float(stats.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=False).pvalue)


def js_distance(baseline_counts: Sequence[float], candidate_counts: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two histograms on the same bins."""
    b, c = _proportions(baseline_counts), _proportions(candidate_counts)
    return float(jensenshannon(b, c, base=2))


def ks_pvalue(d: float, n: int, m: int) -> float:
    """Two-sided p-value of a two-sample KS statistic, exactly as ks_2samp(method="asymp").

    The statistic itself comes from the database (an ECDF walk), so the p-value must be a
    function of (D, n, m) alone; scipy's asymptotic method is that function."""
    if n <= 0 or m <= 0:
        return float("nan")
    en = m * n / (m + n)
    return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))


def ks(baseline: Sequence[float], candidate: Sequence[float]) -> tuple[float, float]:
    """(D, p) on raw samples, with the same p-value method as the in-database path."""
    r = stats.ks_2samp(np.asarray(baseline, float), np.asarray(candidate, float), method="asymp")
    return float(r.statistic), float(r.pvalue)


def wasserstein(baseline: Sequence[float], candidate: Sequence[float]) -> float:
    return float(stats.wasserstein_distance(np.asarray(baseline, float), np.asarray(candidate, float)))


def mean_shift_sd(baseline_mean: float, baseline_sd: float | None, candidate_mean: float) -> float | None:
    """Shift of the mean in baseline standard deviations (None when the baseline does not vary)."""
    if baseline_sd is None or not baseline_sd > 0:
        return None
    return (candidate_mean - baseline_mean) / baseline_sd


QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def sample_stats(x: np.ndarray, duration: np.ndarray | None = None, length: np.ndarray | None = None) -> dict[str, Any]:
    """The per-side statistics the SQL summary returns, on a raw sample (pandas benchmark, tests).

    Percentiles interpolate linearly, as PostgreSQL's percentile_cont does."""
    out: dict[str, Any] = {
        "n": int(x.size),
        "mean": float(x.mean()),
        "sd": float(x.std(ddof=1)) if x.size > 1 else None,
        "min": float(x.min()),
        "max": float(x.max()),
        "quantiles": [float(q) for q in np.quantile(x, QUANTILES)],
    }
    for name, other in (("corr_duration", duration), ("corr_length", length)):
        out[name] = _corr(x, other)
    return out


def _corr(x: np.ndarray, y: np.ndarray | None) -> float | None:
    if y is None:
        return None
    ok = ~np.isnan(y)
    if ok.sum() < 2 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return None  # as PostgreSQL's corr(): undefined without variation
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def bin_index(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """0-based bin of PostgreSQL's least(width_bucket(x, lo, hi, bins), bins) - 1 (PostgreSQL 14+
    computes bins * ((x - lo) / (hi - lo)), in that order; the same here so edges agree)."""
    if hi <= lo:
        return np.zeros(x.size, dtype=np.int64)
    idx = np.floor(bins * ((x - lo) / (hi - lo))).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def equal_width_counts(x: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Counts in width_bucket(x, lo, hi, bins) bins, the top edge folded into the last bin."""
    return np.bincount(bin_index(x, lo, hi, bins), minlength=bins if hi > lo else 1)


def fine_arrays(samples: Sequence[np.ndarray], lo: float, hi: float, bins: int) -> tuple[np.ndarray, ...]:
    """(count, total, min, max), each (len(samples), bins): what ``sql.fine_histograms`` returns,
    computed in numpy (the pandas benchmark and the tests)."""
    nb = bins if hi > lo else 1
    out = [
        np.zeros((len(samples), nb)),
        np.zeros((len(samples), nb)),
        np.full((len(samples), nb), np.nan),
        np.full((len(samples), nb), np.nan),
    ]
    for side, x in enumerate(samples):
        idx = bin_index(np.asarray(x, float), lo, hi, bins)
        out[0][side] = np.bincount(idx, minlength=nb)
        out[1][side] = np.bincount(idx, weights=x, minlength=nb)
        np.fmin.at(out[2][side], idx, x)
        np.fmax.at(out[3][side], idx, x)
    return tuple(out)


def quantile_bin_counts(x: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Counts in width_bucket(x, thresholds) buckets 0..len(thresholds): bucket i holds
    thresholds[i-1] <= x < thresholds[i]."""
    idx = np.searchsorted(thresholds, x, side="right")
    return np.bincount(idx, minlength=thresholds.size + 1)


# ---- metrics from a fine histogram (the in-database path) ------------------------------------
FINE_PER_DISPLAY_BIN = 50  # the fine grid is display bins x 50: 1000 bins by default


@dataclass(frozen=True)
class BinnedMetrics:
    hist: np.ndarray  # (2, display bins) counts, baseline then candidate
    hist_edges: np.ndarray
    psi: float
    psi_edges: np.ndarray  # baseline deciles located on the fine grid
    psi_counts: np.ndarray  # (2, psi bins)
    js: float
    ks_d: float  # max |F_b - F_c| over the fine grid's edges (a lower bound of the exact D)
    ks_d_max: float  # upper bound of the exact D
    wasserstein: float  # per-bin means as support points
    wasserstein_err: float  # |exact - this| is at most this
    quantiles: np.ndarray  # (2, len(QUANTILES)) percentile_cont estimates
    quantile_err: float  # at most one fine bin's spread


def _coarsen(counts: np.ndarray, factor: int) -> np.ndarray:
    if counts.shape[1] % factor:
        return counts  # a constant key: one bin
    return counts.reshape(counts.shape[0], -1, factor).sum(axis=2)


def _psi_buckets(count: np.ndarray, psi_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline deciles on the fine grid: boundary j is the first fine bin whose cumulative
    baseline share reaches j/psi_bins; buckets are the fine bins between boundaries. Returns
    (bucket counts (2, psi_bins), boundary indexes). Repeated boundaries give empty buckets,
    which add nothing to PSI (discrete scores)."""
    cum = np.cumsum(count, axis=1)
    nb = cum[0, -1]
    bounds = np.array([int(np.searchsorted(cum[0], j / psi_bins * nb - 1e-9 * nb)) for j in range(1, psi_bins)])
    at = np.concatenate([np.zeros((2, 1)), cum[:, bounds], cum[:, -1:]], axis=1)
    return np.diff(at, axis=1), bounds


def _order_stat(count: np.ndarray, mn: np.ndarray, mx: np.ndarray, k: float) -> float:
    """Approximate k-th smallest (0-based) of one side: exact at a bin's first and last element
    and for single-valued bins, linear between its min and max otherwise."""
    cum = np.cumsum(count)
    i = int(np.searchsorted(cum, k + 1))
    i = min(i, len(cum) - 1)
    before = cum[i - 1] if i else 0.0
    c = count[i]
    if c <= 1 or mx[i] == mn[i]:
        return float(mn[i])
    return float(mn[i] + (k - before) / (c - 1) * (mx[i] - mn[i]))


def binned_quantiles(count: np.ndarray, mn: np.ndarray, mx: np.ndarray, qs: Sequence[float] = QUANTILES) -> list[float]:
    """percentile_cont(q) estimates: linear interpolation between order statistics floor(h), +1."""
    n = count.sum()
    out = []
    for q in qs:
        h = q * (n - 1)
        lo_k = np.floor(h)
        a = _order_stat(count, mn, mx, lo_k)
        b = _order_stat(count, mn, mx, min(lo_k + 1, n - 1))
        out.append(a + (h - lo_k) * (b - a))
    return out


def binned_ks(count: np.ndarray, mn: np.ndarray, mx: np.ndarray) -> tuple[float, float]:
    """(D at the grid edges, upper bound of the exact D). Inside a bin F moves by at most the bin's
    mass, so |F_b - F_c| there exceeds its edge values by at most the larger mass; a bin holding
    one distinct value (both sides) has its single jump on the edge values already."""
    n = count.sum(axis=1, keepdims=True)
    mass = count / n
    f = np.cumsum(mass, axis=1)
    d_right = f[0] - f[1]
    d_left = np.concatenate([[0.0], d_right[:-1]])
    edge = np.maximum(np.abs(d_left), np.abs(d_right))
    lo = np.where(count > 0, mn, np.inf).min(axis=0)
    hi = np.where(count > 0, mx, -np.inf).max(axis=0)
    single = lo >= hi  # one distinct value in the bin (or an empty bin)
    upper = np.where(single, edge, edge + mass.max(axis=0))
    return float(np.abs(d_right).max()), float(upper.max())


def binned_wasserstein(count: np.ndarray, total: np.ndarray, mn: np.ndarray, mx: np.ndarray) -> tuple[float, float]:
    """(W1 between the per-bin means weighted by counts, error bound). Moving each score to its
    bin's mean moves it by at most the bin's spread, so the error is at most the average spread
    on each side (zero for discrete scores, where every bin holds one value)."""
    vals, errs = [], 0.0
    for side in (0, 1):
        keep = count[side] > 0
        c = count[side][keep]
        vals.append((total[side][keep] / c, c))
        errs += float(np.sum(c * (mx[side][keep] - mn[side][keep])) / c.sum())
    (ub, wb), (uc, wc) = vals
    return float(stats.wasserstein_distance(ub, uc, wb, wc)), errs


def from_fine(
    count: np.ndarray,
    total: np.ndarray,
    mn: np.ndarray,
    mx: np.ndarray,
    lo: float,
    hi: float,
    hist_bins: int,
    psi_bins: int,
) -> BinnedMetrics:
    """Every metric of one key from its fine histogram (rows: baseline, candidate)."""
    if (count.sum(axis=1) == 0).any():
        raise ValueError("both sides need at least one score to compare; check the selection")
    factor = count.shape[1] // hist_bins if count.shape[1] > 1 else 1
    hist = _coarsen(count, factor)
    hist_edges = np.linspace(lo, hi, hist.shape[1] + 1) if hi > lo else np.array([lo, lo])
    psi_counts, bounds = _psi_buckets(count, psi_bins)
    width = (hi - lo) / count.shape[1]
    psi_edges = lo + (bounds + 1) * width
    ks_d, ks_max = binned_ks(count, mn, mx)
    w1, w1_err = binned_wasserstein(count, total, mn, mx)
    q = np.array([binned_quantiles(count[s], mn[s], mx[s]) for s in (0, 1)])
    spread = np.nan_to_num(mx - mn)
    return BinnedMetrics(
        hist,
        hist_edges,
        psi(psi_counts[0], psi_counts[1]),
        psi_edges,
        psi_counts,
        js_distance(hist[0], hist[1]),
        ks_d,
        ks_max,
        w1,
        w1_err,
        q,
        float(spread.max()),
    )


def bootstrap_intervals(
    fine_count: np.ndarray,
    fine_total: np.ndarray,
    psi_counts: np.ndarray,
    n_boot: int,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Percentile bootstrap intervals of PSI and of the mean difference (candidate - baseline).

    The scores stay in the database, so each side is resampled as a multinomial draw over its
    histogram (PSI buckets for PSI; the fine grid, each bin at its observed mean, for the mean):
    the same resampling as drawing the rows with replacement, at the grid's resolution."""
    rng = np.random.default_rng(seed)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    psis = np.empty(n_boot)
    diffs = np.empty(n_boot)
    with np.errstate(invalid="ignore", divide="ignore"):
        centers = np.where(fine_count > 0, fine_total / np.maximum(fine_count, 1), 0.0)
    for i in range(n_boot):
        b = rng.multinomial(int(psi_counts[0].sum()), psi_counts[0] / max(psi_counts[0].sum(), 1))
        c = rng.multinomial(int(psi_counts[1].sum()), psi_counts[1] / max(psi_counts[1].sum(), 1))
        psis[i] = psi(b.tolist(), c.tolist())
        means = []
        for side in (0, 1):
            n = int(fine_count[side].sum())
            draw = rng.multinomial(n, fine_count[side] / max(n, 1))
            means.append(float((draw * centers[side]).sum() / max(n, 1)))
        diffs[i] = means[1] - means[0]
    return (
        (float(np.percentile(psis, lo_q)), float(np.percentile(psis, hi_q))),
        (float(np.percentile(diffs, lo_q)), float(np.percentile(diffs, hi_q))),
    )
