"""Bradley-Terry leaderboard: bootstrap CIs cover the true strengths, style control removes a
planted "longer wins" effect, and the store path reads human A/B judgments with style features."""

from __future__ import annotations

import numpy as np
import pytest
from drift_fixtures import add_scores, campaign, drift, rate, raters, seed_policy

from earmark.domain.records import RewardModelCreate, ScoreCreate
from earmark.drift.leaderboard import PairRows, fit


def simulate(
    strengths: list[float],
    n: int,
    seed: int,
    *,
    mean_duration: list[float] | None = None,
    gamma: float = 0.0,
    raters: int = 3,
) -> PairRows:
    """Comparisons between random versions; each rater prefers A with
    sigmoid(theta_A - theta_B + gamma * normalized duration difference)."""
    rng = np.random.default_rng(seed)
    k = len(strengths)
    a, b = rng.integers(0, k, n), rng.integers(0, k, n)
    md = np.array(mean_duration or [5.0] * k)
    da, db = md[a] * rng.lognormal(0, 0.3, n), md[b] * rng.lognormal(0, 0.3, n)
    z = (da - db) / (da + db)
    p = 1 / (1 + np.exp(-(np.array(strengths)[a] - np.array(strengths)[b] + gamma * z / 0.2)))
    y = rng.binomial(raters, p) / raters
    nan = np.full(n, np.nan)
    return PairRows(
        [f"v{i}" for i in range(k)],
        a,
        b,
        y,
        np.full(n, float(raters)),
        {"duration": da, "loudness": nan, "rate": nan},
        {"duration": db, "loudness": nan, "rate": nan},
    )


def test_bootstrap_ci_contains_true_strengths() -> None:
    truth = [0.0, 0.5, 1.0, -0.5]
    lb = fit(simulate(truth, 1500, seed=1), bootstrap=200, seed=0)
    assert lb.anchor == "v0" and lb.strength[0] == 0
    for i, t in enumerate(truth):
        assert lb.ci_low[i] <= t <= lb.ci_high[i], (lb.versions[i], lb.ci_low[i], t, lb.ci_high[i])
        assert lb.ci_low[i] <= lb.strength[i] <= lb.ci_high[i]
    assert np.allclose(lb.strength, truth, atol=0.2)
    assert [r["version"] for r in lb.rows()] == ["v2", "v1", "v0", "v3"]
    assert lb.rows()[0]["rating"] == pytest.approx(1000 + 400 / np.log(10) * lb.strength[2])
    # more data, narrower intervals
    wide = fit(simulate(truth, 300, seed=2), bootstrap=200, seed=0)
    assert (wide.ci_high - wide.ci_low)[1:].mean() > (lb.ci_high - lb.ci_low)[1:].mean()


def test_style_control_removes_a_planted_longer_wins_effect() -> None:
    # v1 and v2 are equally good; v2 talks twice as long, and raters like longer answers.
    rows = simulate([0.0, 0.5, 0.5], 3000, seed=3, mean_duration=[5.0, 5.0, 10.0], gamma=1.0)
    raw = fit(rows, bootstrap=200, seed=0)
    styled = fit(rows, style_control=True, bootstrap=200, seed=0)
    assert raw.strength[2] - raw.strength[1] > 0.3  # without control v2 looks clearly better...
    assert raw.ci_low[2] > raw.ci_high[1]
    assert styled.style_used == ["duration"]
    _est, lo, _hi = styled.style_coef["duration"]
    assert lo > 0  # ...the style effect is found...
    assert abs(styled.strength[2] - styled.strength[1]) < 0.15  # ...and the advantage is gone
    assert styled.ci_low[2] <= 0.5 <= styled.ci_high[2] and styled.ci_low[1] <= 0.5 <= styled.ci_high[1]


def test_no_style_effect_leaves_strengths_alone() -> None:
    rows = simulate([0.0, 0.8], 2000, seed=4, mean_duration=[5.0, 9.0], gamma=0.0)
    raw, styled = fit(rows, bootstrap=200), fit(rows, style_control=True, bootstrap=200)
    assert abs(styled.style_coef["duration"][0]) < 0.1
    assert styled.strength[1] == pytest.approx(raw.strength[1], abs=0.1)
    assert styled.ci_low[1] <= 0.8 <= styled.ci_high[1]


def test_needs_two_versions() -> None:
    rows = simulate([0.0], 10, seed=5)
    with pytest.raises(ValueError, match="at least two policy versions"):
        fit(rows)


def test_leaderboard_from_human_judgments_in_the_store(em) -> None:
    """A/B campaign over both versions: v1's longer answers win; loudness and rate come from the
    prosody scorer's features, duration from the rollouts."""
    world = seed_policy(em, n_prompts=12, k=3, length=lambda v, rng: int(rng.integers(10, 20) * (1 + v)))
    rm = em.scores.register_reward_model(
        RewardModelCreate(name="prosody", version="1", kind="acoustic", dimensions=["prosody_match"])
    )
    rng = np.random.default_rng(0)
    em.scores.ingest(
        [
            ScoreCreate(
                rollout_id=rid,
                reward_model_id=rm.id,
                dimension="prosody_match",
                score=0.5,
                features={"rate_wps": float(rng.uniform(2, 3)), "loudness_db": float(rng.normal(-20, 2))},
            )
            for v in (0, 1)
            for rid in world["rollouts"][v]
        ]
    )
    camp = campaign(em, "ab", [world["policies"][v].id for v in (0, 1)], max_items=200)
    words = world["words"]
    for r in raters(em, 2):
        rate(em, r, camp.id, lambda ids: {"choice": "A" if words[ids[0]] >= words[ids[1]] else "B", "strength": 2})
    svc = drift(em)
    raw = svc.leaderboard(policy="speech", style_control=False, bootstrap=50, anchor=0)
    assert raw.versions == ["v0", "v1"] and raw.anchor == "v0"
    assert raw.strength[1] > 1 and raw.comparisons.sum() > 0
    styled = svc.leaderboard(policy="speech", bootstrap=50, anchor=0)
    assert set(styled.style_used) == {"duration", "loudness", "rate"}
    assert styled.style_coef["duration"][0] > 1  # length explains the wins...
    assert styled.strength[1] < raw.strength[1]  # ...so v1's own strength shrinks
    add_scores(
        em, "judge", "generative", "helpfulness", {rid: words[rid] / 40 for v in (0, 1) for rid in world["rollouts"][v]}
    )
    agree = svc.judge_agreement(policy="speech")
    assert agree and agree[0]["agreement"] == pytest.approx(1.0)  # the judge tracks length like the raters
    over = svc.overoptimization("speech", anchor=0)
    assert [r["version"] for r in over] == [0, 1]
    assert over[1]["human_win_rate"] > 0.7 and over[0]["human_win_rate"] == pytest.approx(0.5)
    assert over[1]["rewards"]["judge/helpfulness"]["mean"] > over[0]["rewards"]["judge/helpfulness"]["mean"]
