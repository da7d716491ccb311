"""Rater drift: item-adjusted leniency, gold accuracy trend, and Krippendorff's alpha from the
value counts PostgreSQL builds, checked against the krippendorff package on raw data."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
from drift_fixtures import campaign, drift, rate, raters, seed_policy
from sqlalchemy import select

from earmark.drift.raters import alpha_from_counts
from earmark.store.models import Judgment


def counts(data: np.ndarray) -> dict[int, dict[float, int]]:
    """{unit: {value: count}} of a raters x units matrix (nan = missing), as value_counts() reads it."""
    out: dict[int, dict[float, int]] = {}
    for n, u in enumerate(data.T):
        vals = u[~np.isnan(u)]
        if len(vals) >= 2:
            out[n] = {float(v): int((vals == v).sum()) for v in np.unique(vals)}
    return out


@pytest.mark.parametrize("dimension", ["prosody", "mushra", "choice"])
def test_alpha_from_counts_matches_the_package(dimension: str) -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 4, 40)  # categories 4 and 5 unused: the fixed 1-5 domain still counts them
    data = np.array([np.clip(truth + rng.integers(-1, 2, 40), 1, 5) for _ in range(4)], float)
    data[rng.random(data.shape) < 0.2] = np.nan
    level = {"prosody": "ordinal", "mushra": "interval", "choice": "nominal"}[dimension]
    domain = {"prosody": [1, 2, 3, 4, 5], "choice": [0, 1, 2, 3]}.get(dimension)
    if dimension == "choice":
        data = data - 1  # choices are 0-3
    want = krippendorff.alpha(reliability_data=data, level_of_measurement=level, value_domain=domain)
    assert alpha_from_counts(dimension, counts(data)) == pytest.approx(want, rel=1e-9)
    assert alpha_from_counts("prosody", {0: {3.0: 2}, 1: {3.0: 3}}) is None  # one value everywhere: undefined


def test_rater_drift_from_the_store(em) -> None:
    world = seed_policy(em, n_prompts=10, k=2)
    camp = campaign(em, "overlap", [world["policies"][0].id], overlap=3, gold_ratio=0.3)
    fair, lenient, careless = raters(em, 3)
    rng = np.random.default_rng(1)
    quality = {rid: int(rng.integers(2, 5)) for rid in world["rollouts"][0]}

    def answer(bias: int, gold_right: bool = True):
        def f(ids: list[int]) -> dict:
            x = int(np.clip(quality.get(ids[0], 3) + bias, 1, 5))
            # gold items pair a real answer (A) with a response to another prompt
            choice = "A" if gold_right or ids[0] not in quality else "B"
            return {
                "choice": choice,
                "strength": 2,
                "ratings": {"prosody": x, "persona_consistency": x, "correctness": x},
            }

        return f

    # one item at a time in turn, so each rater gets some of the (single-slot) gold items
    while sum(
        [
            rate(em, fair, camp.id, answer(0), limit=1),
            rate(em, lenient, camp.id, answer(+1), limit=1),
            rate(em, careless, camp.id, answer(0, gold_right=False), limit=1),
        ]
    ):
        pass
    res = drift(em).rater_drift(campaign_ids=[camp.id])
    len_by = {r["rater"]: r["leniency"] for r in res.leniency}
    assert len_by["r1"] > 0.5 > len_by["r0"] and len_by["r1"] > len_by["r2"]
    gold = {r["rater"]: r["accuracy"] for r in res.gold}
    assert gold["r0"] == 1.0 and gold["r2"] < 0.5

    # alpha per dimension equals the package on the same judgments (units = comparisons)
    rows = em.ctx.tx(
        lambda s: s.execute(
            select(Judgment.rater_id, Judgment.comparison_id, Judgment.ratings).where(
                Judgment.campaign_id == camp.id, Judgment.is_gold.is_(False)
            )
        ).all()
    )
    who = sorted({r for r, _, _ in rows})
    units = sorted({c for _, c, _ in rows})
    data = np.full((len(who), len(units)), np.nan)
    for r, c, ratings in rows:
        data[who.index(r), units.index(c)] = ratings["prosody"]
    got = {(a["campaign"], a["dimension"]): a["alpha"] for a in res.alpha}
    want = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    assert got[("overlap", "prosody")] == pytest.approx(want, rel=1e-9)  # unrounded
    assert ("overlap", "preference") in got
