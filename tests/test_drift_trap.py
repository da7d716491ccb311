"""The verifiable-reward trap: verifiable scores up while human naturalness/prosody/persona go down."""

from __future__ import annotations

import numpy as np
import pytest
from drift_fixtures import add_scores, campaign, drift, rate, raters, seed_policy

from earmark.drift.trap import assess

TH = {"verifiable_rise": 0.02, "human_fall": 0.05}


def series(verifiable: list[float], human: list[float]) -> tuple[list[dict], list[dict]]:
    v = [{"round": r, "dimension": "answer_match/exact_match", "mean": x, "n": 50} for r, x in enumerate(verifiable)]
    h = [
        {"round": r, "dimension": d, "mean": x, "n": 20}
        for r, x in enumerate(human)
        for d in ("prosody", "persona_consistency", "naturalness")
    ]
    return v, h


def test_flag_on_verifiable_up_human_down() -> None:
    res = assess(*series([0.60, 0.72, 0.85], [4.2, 3.6, 3.0]), **TH)
    assert res.flagged and all(s["flagged"] for s in res.steps)
    assert res.overall["verifiable_delta"] == pytest.approx(0.25)
    assert res.overall["human_delta"] == pytest.approx((3.0 - 4.2) / 4)  # 1-5 rescaled to 0-1
    assert "verifiable-reward trap" in res.message


@pytest.mark.parametrize(
    "verifiable,human",
    [
        ([0.60, 0.72, 0.85], [3.0, 3.4, 3.9]),  # both improve: the goal
        ([0.85, 0.72, 0.60], [4.2, 3.6, 3.0]),  # both get worse: a regression, not the trap
        ([0.60, 0.605, 0.61], [4.2, 4.15, 4.1]),  # within the thresholds
    ],
)
def test_no_flag_otherwise(verifiable: list[float], human: list[float]) -> None:
    res = assess(*series(verifiable, human), **TH)
    assert not res.flagged


def test_one_bad_step_is_flagged_even_if_the_ends_agree() -> None:
    res = assess(*series([0.5, 0.7, 0.7], [3.0, 2.0, 3.5]), **TH)
    assert [s["flagged"] for s in res.steps] == [True, False]
    assert res.flagged and not res.overall["flagged"]


def test_needs_two_rounds_with_both_sides() -> None:
    res = assess(*series([0.5, 0.9], []), **TH)
    assert not res.flagged and "not enough rounds" in res.message


def test_trap_through_the_store(em) -> None:
    """Three rounds: verifiable accuracy climbs, raters hear worse prosody, persona and naturalness."""
    world = seed_policy(em, versions=(0, 1, 2), n_prompts=6, k=2, regime="reasoning")
    rng = np.random.default_rng(0)
    acc = {0: 0.55, 1: 0.7, 2: 0.85}
    add_scores(
        em,
        "answer_match",
        "verifiable",
        "exact_match",
        {rid: float(rng.random() < acc[v]) for v in acc for rid in world["rollouts"][v]},
    )
    feel = {0: 5, 1: 4, 2: 2}
    (rater,) = raters(em, 1)
    for v in acc:
        camp = campaign(em, f"mos-r{v}", [world["policies"][v].id], protocol="mos", rounds=[v])
        rate(
            em,
            rater,
            camp.id,
            lambda ids, v=v: {
                "mos": [feel[v]],
                "ratings": {"prosody": feel[v], "persona_consistency": feel[v], "correctness": 5},
            },
        )
    res = drift(em).trap("speech", regimes=["reasoning"])
    assert [r["round"] for r in res.rounds] == [0, 1, 2]
    assert res.rounds[0]["human"] == pytest.approx(1.0) and res.rounds[2]["human"] == pytest.approx(0.25)
    assert res.rounds[2]["verifiable"] > res.rounds[0]["verifiable"]
    assert res.flagged
    assert not drift(em).trap("speech", regimes=["asr"]).flagged  # no data in that regime
    rep = drift(em).report(1, 2, bootstrap=20, store=False)
    assert any(a.kind == "trap" and a.severity == "alert" for a in rep.alerts)
