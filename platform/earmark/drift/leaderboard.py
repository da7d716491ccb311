"""Policy leaderboard from human A/B judgments: Bradley-Terry with bootstrap CIs and style control.

Model (Bradley & Terry, 1952; as fitted by Chatbot Arena, Chiang et al., 2024):
    P(A beats B) = sigmoid(theta_A - theta_B + gamma . z_AB)
with theta per policy version (the anchor version fixed at 0) and, under style control, z the
standardized style differences of the two responses: duration, loudness and speaking rate, the
audio analogue of Arena's length/markdown control (lmsys.org blog, "Does style matter?", 2024).
A version that only wins by talking longer or louder keeps its raw rating but loses it once
gamma absorbs the style effect.

Outcomes are per comparison: the share of raters preferring A (ties count a half), weighted by
the number of raters, so the likelihood is the binomial one over all judgments. Confidence
intervals resample comparisons (not single judgments: raters of one item are not independent)
and refit. Fits are Newton steps with a small ridge, so 200 bootstrap refits take well under a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

STYLE_FEATURES = ("duration", "loudness", "rate")
ELO_SCALE = 400 / np.log(10)  # log-odds -> Elo points, as Arena reports
ELO_BASE = 1000.0
RIDGE = 0.05  # keeps a version that never lost (or never won) finite; negligible beside 100+ judgments
MIN_STYLE_COVERAGE = 0.8  # a covariate known for fewer comparisons than this is left out
# Where loudness and speaking rate come from: the prosody scorer's features on reward_scores.
LOUDNESS_KEYS = ("loudness_db", "mean_intensity_db", "lufs")
RATE_KEYS = ("rate_wps",)


@dataclass(frozen=True)
class PairRows:
    """One row per comparison: versions (indexes into ``versions``), share of A wins, raters, style."""

    versions: list[str]
    a: np.ndarray
    b: np.ndarray
    y: np.ndarray  # share of raters preferring A (tie = 0.5)
    n: np.ndarray  # raters
    style_a: dict[str, np.ndarray]  # feature -> value of A's response (nan when unknown)
    style_b: dict[str, np.ndarray]


@dataclass
class Leaderboard:
    versions: list[str]
    anchor: str
    strength: np.ndarray  # log-odds vs anchor
    ci_low: np.ndarray
    ci_high: np.ndarray
    comparisons: np.ndarray  # comparisons each version took part in
    style_control: bool
    style_used: list[str] = field(default_factory=list)
    style_coef: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # est, low, high
    bootstrap: int = 0

    def rows(self) -> list[dict[str, Any]]:
        order = np.argsort(-self.strength)
        return [
            {
                "rank": r + 1,
                "version": self.versions[i],
                "strength": float(self.strength[i]),
                "ci_low": float(self.ci_low[i]),
                "ci_high": float(self.ci_high[i]),
                "rating": ELO_BASE + ELO_SCALE * float(self.strength[i]),
                "rating_low": ELO_BASE + ELO_SCALE * float(self.ci_low[i]),
                "rating_high": ELO_BASE + ELO_SCALE * float(self.ci_high[i]),
                "win_vs_anchor": float(1 / (1 + np.exp(-self.strength[i]))),
                "comparisons": int(self.comparisons[i]),
            }
            for r, i in enumerate(order)
        ]


def _style_matrix(rows: PairRows, features: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Standardized style differences. Positive quantities (duration, rate) as (a - b) / (a + b),
    Arena's normalized length difference; loudness, already logarithmic (dB), as a - b."""
    cols, used = [], []
    for f in features:
        fa, fb = rows.style_a.get(f), rows.style_b.get(f)
        if fa is None or fb is None or len(fa) == 0:
            continue
        known = ~(np.isnan(fa) | np.isnan(fb))
        if known.mean() < MIN_STYLE_COVERAGE:
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (fa - fb) if f == "loudness" else (fa - fb) / (np.abs(fa) + np.abs(fb))
        z = np.where(known & np.isfinite(z), z, 0.0)
        sd = z.std()
        if sd < 1e-9:
            continue  # no variation: nothing to control for
        cols.append((z - z.mean()) / sd)
        used.append(f)
    return (np.column_stack(cols) if cols else np.zeros((len(rows.y), 0))), used


def _design(rows: PairRows, anchor: int, style: np.ndarray) -> np.ndarray:
    k = len(rows.versions)
    x = np.zeros((len(rows.y), k))
    idx = np.arange(len(rows.y))
    x[idx, rows.a] += 1.0
    x[idx, rows.b] -= 1.0
    return np.hstack([np.delete(x, anchor, axis=1), style])


def _newton(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, ridge: float = RIDGE, iters: int = 50, beta: np.ndarray | None = None
) -> np.ndarray:
    """Weighted logistic regression (no intercept) with an L2 ridge, by Newton's method."""
    beta = np.zeros(x.shape[1]) if beta is None else beta.copy()
    eye = ridge * np.eye(x.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (w * (y - p)) - ridge * beta
        hess = (x * (w * p * (1 - p))[:, None]).T @ x + eye
        step = np.linalg.solve(hess, grad)
        beta += step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta


def fit(
    rows: PairRows,
    *,
    anchor: str | None = None,
    style_control: bool = False,
    features: Sequence[str] = STYLE_FEATURES,
    bootstrap: int = 200,
    seed: int = 0,
) -> Leaderboard:
    """Bradley-Terry strengths (log-odds vs ``anchor``, default the first version) with
    percentile bootstrap 95% intervals; with style control, the style coefficients too."""
    k = len(rows.versions)
    if k < 2 or len(rows.y) == 0:
        raise ValueError("a leaderboard needs pairwise judgments between at least two policy versions")
    a_idx = rows.versions.index(anchor) if anchor is not None else 0
    style, used = _style_matrix(rows, features) if style_control else (np.zeros((len(rows.y), 0)), [])
    x = _design(rows, a_idx, style)
    beta = _newton(x, rows.y, rows.n)
    rng = np.random.default_rng(seed)
    draws = np.empty((bootstrap, x.shape[1]))
    for i in range(bootstrap):
        s = rng.integers(0, len(rows.y), len(rows.y))
        draws[i] = _newton(x[s], rows.y[s], rows.n[s], beta=beta)

    def expand(v: np.ndarray) -> np.ndarray:
        return np.insert(v[..., : k - 1], a_idx, 0.0, axis=-1)

    strength = expand(beta)
    lo, hi = (expand(np.percentile(draws, q, axis=0)) if bootstrap else strength for q in (2.5, 97.5))
    coef = {}
    for j, f in enumerate(used):
        col = k - 1 + j
        coef[f] = (
            float(beta[col]),
            float(np.percentile(draws[:, col], 2.5)) if bootstrap else float(beta[col]),
            float(np.percentile(draws[:, col], 97.5)) if bootstrap else float(beta[col]),
        )
    games = np.bincount(rows.a, minlength=k) + np.bincount(rows.b, minlength=k)
    return Leaderboard(
        rows.versions, rows.versions[a_idx], strength, lo, hi, games, style_control, used, coef, bootstrap
    )


def _first_number(col: str, keys: Sequence[str]) -> str:
    parts = [f"CASE WHEN jsonb_typeof({col}->'{k}') = 'number' THEN ({col}->>'{k}')::float8 END" for k in keys]
    return f"coalesce({', '.join(parts)})"


def load_pairs(
    session: Session, *, policy: str | None = None, campaign_ids: Sequence[int] = (), regimes: Sequence[str] = ()
) -> PairRows:
    """Pairwise judgments aggregated per comparison in SQL, with both responses' style features.

    Only raters cleared for aggregation count, gold items are left out (their answer is planted),
    and both rollouts must belong to ``policy`` (any policy when None; versions are then named
    "name vN")."""
    where = ["cardinality(c.rollout_ids) = 2", "NOT c.is_gold", "j.preference IS NOT NULL", "u.cleared_for_aggregation"]
    params: dict[str, Any] = {}
    if campaign_ids:
        where.append("c.campaign_id = ANY(:campaigns)")
        params["campaigns"] = list(campaign_ids)
    if regimes:
        where.append("c.prompt_id IN (SELECT id FROM prompts WHERE regime = ANY(:regimes))")
        params["regimes"] = list(regimes)
    pol = ""
    if policy:
        pol = "AND pa.name = :policy AND pb.name = :policy"
        params["policy"] = policy
    q = f"""
        WITH jc AS (
          SELECT c.id, c.rollout_ids[1] AS ra, c.rollout_ids[2] AS rb, count(*) AS n,
                 avg(CASE WHEN j.preference > 0 THEN 1.0 WHEN j.preference < 0 THEN 0.0 ELSE 0.5 END) AS y
          FROM judgments j JOIN comparisons c ON c.id = j.comparison_id JOIN users u ON u.id = j.rater_id
          WHERE {" AND ".join(where)}
          GROUP BY c.id),
        style AS (
          SELECT DISTINCT ON (rs.rollout_id) rs.rollout_id,
                 {_first_number("rs.features", LOUDNESS_KEYS)} AS loudness, {_first_number("rs.features", RATE_KEYS)} AS rate
          FROM reward_scores rs
          WHERE rs.rollout_id IN (SELECT ra FROM jc UNION SELECT rb FROM jc)
            AND (rs.features ?| CAST(:style_keys AS text[]))
          ORDER BY rs.rollout_id, rs.id DESC)
        SELECT pa.name AS name_a, pa.version AS va, pb.name AS name_b, pb.version AS vb, jc.y, jc.n,
               ra.duration_s AS dur_a, rb.duration_s AS dur_b, sa.loudness AS loud_a, sb.loudness AS loud_b,
               sa.rate AS rate_a, sb.rate AS rate_b
        FROM jc JOIN rollouts ra ON ra.id = jc.ra JOIN rollouts rb ON rb.id = jc.rb
        JOIN policies pa ON pa.id = ra.policy_id JOIN policies pb ON pb.id = rb.policy_id
        LEFT JOIN style sa ON sa.rollout_id = jc.ra LEFT JOIN style sb ON sb.rollout_id = jc.rb
        WHERE true {pol}
        ORDER BY jc.id"""
    params["style_keys"] = list(LOUDNESS_KEYS + RATE_KEYS)
    rows = session.execute(text(q), params).mappings().all()
    label = (lambda n, v: f"v{v}") if policy else (lambda n, v: f"{n} v{v}")
    keys = sorted({(r["name_a"], r["va"]) for r in rows} | {(r["name_b"], r["vb"]) for r in rows})
    names = [label(n, v) for n, v in keys]
    pos = {k: i for i, k in enumerate(keys)}

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if r[name] is None else float(r[name]) for r in rows], dtype=float)

    return PairRows(
        names,
        np.array([pos[(r["name_a"], r["va"])] for r in rows], dtype=int),
        np.array([pos[(r["name_b"], r["vb"])] for r in rows], dtype=int),
        col("y"),
        col("n"),
        {"duration": col("dur_a"), "loudness": col("loud_a"), "rate": col("rate_a")},
        {"duration": col("dur_b"), "loudness": col("loud_b"), "rate": col("rate_b")},
    )
