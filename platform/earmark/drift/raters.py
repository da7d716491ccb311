"""Rater drift: leniency over time, gold accuracy trend, Krippendorff's alpha per campaign.

- Leniency: how far a rater's 1-5 ratings sit above (+) or below (-) the mean of everyone who
  rated the same item, averaged per time window; item-adjusted, so a rater who happened to get
  better audio does not look lenient. Computed in SQL with a window function over each item.
- Gold accuracy per rater and window, from planted items with known answers.
- Krippendorff's alpha per campaign and dimension from the coincidence matrix, which PostgreSQL
  builds with a self-join over each item's ratings (at most a few dozen cells per dimension);
  alpha is then a few array operations (Krippendorff, *Content Analysis*, 2004, ch. 11).
  It agrees with the ``krippendorff`` package (tests/test_drift_raters.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

RATING_DIMENSIONS = ("prosody", "persona_consistency", "correctness")
LEVELS = {"prosody": "ordinal", "persona_consistency": "ordinal", "correctness": "ordinal", "preference": "ordinal"}


@dataclass
class RaterDrift:
    leniency: list[dict[str, Any]]  # rater, window_start, leniency, mean_rating, n
    gold: list[dict[str, Any]]  # rater, window_start, accuracy, n
    alpha: list[dict[str, Any]]  # campaign, dimension, alpha, units, pairable values


def _campaign_filter(campaign_ids: Sequence[int], params: dict[str, Any]) -> str:
    if not campaign_ids:
        return ""
    params["campaigns"] = list(campaign_ids)
    return "AND j.campaign_id = ANY(:campaigns)"


def leniency(session: Session, *, hours: int, campaign_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"width": f"{int(hours)} hours", "dims": list(RATING_DIMENSIONS)}
    camp = _campaign_filter(campaign_ids, params)
    q = f"""
        WITH d AS (
          SELECT j.rater_id, j.comparison_id, j.created_at, e.key AS dim, (e.value #>> '{{}}')::float8 AS x
          FROM judgments j CROSS JOIN LATERAL jsonb_each(j.ratings) e
          WHERE e.key = ANY(:dims) AND jsonb_typeof(e.value) = 'number' AND NOT j.is_gold {camp}),
        c AS (
          SELECT d.*, x - avg(x) OVER item AS dev, count(*) OVER item AS raters
          FROM d WINDOW item AS (PARTITION BY comparison_id, dim))
        SELECT u.username AS rater, date_bin(CAST(:width AS interval), c.created_at, TIMESTAMPTZ '2000-01-01') AS window_start,
               avg(c.dev) AS leniency, avg(c.x) AS mean_rating, count(*) AS n
        FROM c JOIN users u ON u.id = c.rater_id
        WHERE c.raters >= 2
        GROUP BY 1, 2 ORDER BY 1, 2"""
    return [dict(r) for r in session.execute(text(q), params).mappings()]


def gold_trend(session: Session, *, hours: int, campaign_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"width": f"{int(hours)} hours"}
    camp = _campaign_filter(campaign_ids, params)
    q = f"""
        SELECT u.username AS rater, date_bin(CAST(:width AS interval), j.created_at, TIMESTAMPTZ '2000-01-01') AS window_start,
               avg(CASE WHEN j.gold_correct THEN 1.0 ELSE 0.0 END) AS accuracy, count(*) AS n
        FROM judgments j JOIN users u ON u.id = j.rater_id
        WHERE j.is_gold AND j.gold_correct IS NOT NULL {camp}
        GROUP BY 1, 2 ORDER BY 1, 2"""
    return [dict(r) for r in session.execute(text(q), params).mappings()]


def coincidences(
    session: Session, campaign_ids: Sequence[int] = ()
) -> dict[tuple[int, str], dict[tuple[float, float], float]]:
    """{(campaign, dimension): {(c, k): o_ck}}: each item with m >= 2 values adds, for every
    ordered pair of two different judgments, 1 / (m - 1) to the cell of their two values."""
    params: dict[str, Any] = {"dims": list(RATING_DIMENSIONS)}
    camp = _campaign_filter(campaign_ids, params)
    q = f"""
        WITH v AS (
          SELECT j.campaign_id, j.comparison_id AS unit, j.id AS jid, e.key AS dim, (e.value #>> '{{}}')::float8 AS x
          FROM judgments j CROSS JOIN LATERAL jsonb_each(j.ratings) e
          WHERE e.key = ANY(:dims) AND jsonb_typeof(e.value) = 'number' AND NOT j.is_gold {camp}
          UNION ALL
          SELECT j.campaign_id, j.comparison_id, j.id, 'preference', j.preference
          FROM judgments j WHERE j.protocol = 'pairwise' AND j.preference IS NOT NULL AND NOT j.is_gold {camp}),
        m AS (SELECT campaign_id, unit, dim, count(*) AS m FROM v GROUP BY 1, 2, 3 HAVING count(*) >= 2)
        SELECT a.campaign_id, a.dim, a.x AS c, b.x AS k, sum(1.0 / (m.m - 1)) AS o
        FROM v a JOIN v b ON b.campaign_id = a.campaign_id AND b.unit = a.unit AND b.dim = a.dim AND b.jid <> a.jid
        JOIN m ON m.campaign_id = a.campaign_id AND m.unit = a.unit AND m.dim = a.dim
        GROUP BY 1, 2, 3, 4"""
    out: dict[tuple[int, str], dict[tuple[float, float], float]] = defaultdict(dict)
    for camp_id, dim, c, k, o in session.execute(text(q), params).all():
        out[(camp_id, dim)][(float(c), float(k))] = float(o)
    return dict(out)


def alpha_from_coincidences(o: dict[tuple[float, float], float], level: str = "ordinal") -> float | None:
    """Krippendorff's alpha = 1 - D_o / D_e from a coincidence matrix. None when undefined
    (fewer than two pairable values, or a single value everywhere: no variation to agree on)."""
    values = sorted({c for c, _ in o} | {k for _, k in o})
    if len(values) < 2:
        return None
    pos = {v: i for i, v in enumerate(values)}
    mat = np.zeros((len(values), len(values)))
    for (c, k), w in o.items():
        mat[pos[c], pos[k]] += w
    n_c = mat.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return None
    v = np.array(values)
    if level == "nominal":
        delta = 1.0 - np.eye(len(values))
    elif level == "interval":
        delta = (v[:, None] - v[None, :]) ** 2
    else:  # ordinal: squared rank-sum distance over the categories between c and k
        cum = np.cumsum(n_c)
        delta = np.zeros_like(mat)
        for i in range(len(values)):
            for j in range(len(values)):
                lo, hi = min(i, j), max(i, j)
                between = cum[hi] - (cum[lo - 1] if lo else 0.0)
                delta[i, j] = (between - (n_c[i] + n_c[j]) / 2) ** 2
    d_o = float((mat * delta).sum())
    d_e = float((np.outer(n_c, n_c) * delta).sum() / (n - 1))
    if d_e == 0:
        return None
    return 1.0 - d_o / d_e


def alphas(session: Session, campaign_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    names: dict[int, str] = dict(session.execute(text("SELECT id, name FROM campaigns")).all())
    out = []
    for (camp, dim), o in sorted(coincidences(session, campaign_ids).items()):
        a = alpha_from_coincidences(o, LEVELS.get(dim, "ordinal"))
        out.append(
            {
                "campaign_id": camp,
                "campaign": names.get(camp, str(camp)),
                "dimension": dim,
                "alpha": None if a is None else round(a, 4),
                "pairable": round(sum(o.values()), 1),
            }
        )
    return out


def rater_drift(session: Session, *, hours: int, campaign_ids: Sequence[int] = ()) -> RaterDrift:
    return RaterDrift(
        leniency(session, hours=hours, campaign_ids=campaign_ids),
        gold_trend(session, hours=hours, campaign_ids=campaign_ids),
        alphas(session, campaign_ids),
    )
