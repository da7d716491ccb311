"""Rater drift: leniency over time, gold accuracy trend, Krippendorff's alpha per campaign.

- Leniency: how far a rater's 1-5 ratings sit above (+) or below (-) the mean of everyone who
  rated the same item, averaged per time window; item-adjusted, so a rater who happened to get
  better audio does not look lenient. Computed in SQL with a window function over each item.
- Gold accuracy per rater and window, from planted items with known answers.
- Krippendorff's alpha per campaign and dimension: PostgreSQL counts each item's values (one row
  per item and value), and the project's one alpha (``earmark.domain.agreement``, the
  ``krippendorff`` package) reads that units x values matrix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from earmark.domain.agreement import DOMAINS, krippendorff_alpha
from earmark.domain.annotation import RATING_DIMENSIONS


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


def value_counts(
    session: Session, campaign_ids: Sequence[int] = ()
) -> dict[tuple[int, str], dict[int, dict[float, int]]]:
    """{(campaign, dimension): {unit: {value: count}}} over items with at least two values, counted
    by PostgreSQL (one row per item and value, however many judgments there are)."""
    params: dict[str, Any] = {"dims": list(RATING_DIMENSIONS)}
    camp = _campaign_filter(campaign_ids, params)
    q = f"""
        WITH v AS (
          SELECT j.campaign_id, j.comparison_id AS unit, e.key AS dim, (e.value #>> '{{}}')::float8 AS x
          FROM judgments j CROSS JOIN LATERAL jsonb_each(j.ratings) e
          WHERE e.key = ANY(:dims) AND jsonb_typeof(e.value) = 'number' AND NOT j.is_gold {camp}
          UNION ALL
          SELECT j.campaign_id, j.comparison_id, 'preference', j.preference
          FROM judgments j WHERE j.protocol = 'pairwise' AND j.preference IS NOT NULL AND NOT j.is_gold {camp}),
        m AS (SELECT campaign_id, unit, dim FROM v GROUP BY 1, 2, 3 HAVING count(*) >= 2)
        SELECT v.campaign_id, v.dim, v.unit, v.x, count(*) AS n
        FROM v JOIN m USING (campaign_id, unit, dim)
        GROUP BY 1, 2, 3, 4"""
    out: dict[tuple[int, str], dict[int, dict[float, int]]] = defaultdict(lambda: defaultdict(dict))
    for camp_id, dim, unit, x, n in session.execute(text(q), params).all():
        out[(camp_id, dim)][unit][float(x)] = int(n)
    return {k: dict(v) for k, v in out.items()}


def alpha_from_counts(dimension: str, units: dict[int, dict[float, int]]) -> float | None:
    """Krippendorff's alpha (``earmark.domain.agreement``) of {unit: {value: count}}."""
    domain = DOMAINS.get(dimension)
    values = sorted({x for u in units.values() for x in u} | set(domain or ()))
    if len(values) < 2 or not units:
        return None
    col = {v: i for i, v in enumerate(values)}
    mat = np.zeros((len(units), len(values)))
    for r, u in enumerate(units.values()):
        for x, n in u.items():
            mat[r, col[x]] = n
    return krippendorff_alpha(dimension, value_counts=mat, value_domain=values)


def alphas(session: Session, campaign_ids: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Alpha per campaign and dimension, unrounded; ``pairable`` counts the values in items with two or more."""
    names: dict[int, str] = dict(session.execute(text("SELECT id, name FROM campaigns")).all())
    out = []
    for (camp, dim), units in sorted(value_counts(session, campaign_ids).items()):
        out.append(
            {
                "campaign_id": camp,
                "campaign": names.get(camp, str(camp)),
                "dimension": dim,
                "alpha": alpha_from_counts(dim, units),
                "pairable": sum(n for u in units.values() for n in u.values()),
            }
        )
    return out


def rater_drift(session: Session, *, hours: int, campaign_ids: Sequence[int] = ()) -> RaterDrift:
    return RaterDrift(
        leniency(session, hours=hours, campaign_ids=campaign_ids),
        gold_trend(session, hours=hours, campaign_ids=campaign_ids),
        alphas(session, campaign_ids),
    )
