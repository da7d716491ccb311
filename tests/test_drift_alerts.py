"""Drift and hacking alerts on planted data: a known shift alerts, no shift does not, a planted
length-reward correlation is caught, alerts are stored, and only dashboard roles may look."""

from __future__ import annotations

import numpy as np
import pytest
from drift_fixtures import add_scores, drift, seed_policy

from earmark.domain.enums import Role
from earmark.errors import InvalidInput, NotFound, PermissionDenied


def _plant(em, shift: float, seed: int = 0) -> dict:
    world = seed_policy(em, n_prompts=20, k=25, seed=seed)
    rng = np.random.default_rng(seed)
    scores = {rid: float(rng.normal(0.0, 1.0)) for rid in world["rollouts"][0]}
    scores |= {rid: float(rng.normal(shift, 1.0)) for rid in world["rollouts"][1]}
    add_scores(em, "bt", "learned", "preference", scores)
    # A verifiable dimension that never moves rides along and must stay quiet.
    flat = {rid: float(rng.integers(0, 2)) for v in (0, 1) for rid in world["rollouts"][v]}
    add_scores(em, "answer_match", "verifiable", "exact_match", flat)
    return world


def test_known_shift_raises_psi_ks_and_mean_alerts(em) -> None:
    _plant(em, shift=1.0)
    s = drift(em).compare(0, 1)  # the only policy with both versions is picked
    d = {x.dimension: x for x in s.dimensions}
    moved = d["preference"]
    assert moved.mean_shift_sd == pytest.approx(1.0, abs=0.15)
    assert moved.psi > 0.25 and moved.psi_band == "significant"
    assert moved.ks_d > 0.3 and moved.ks_p < 1e-10
    kinds = {(a.kind, a.dimension) for a in s.fired}
    assert {("psi", "preference"), ("ks", "preference"), ("mean_shift", "preference")} <= kinds
    assert not [a for a in s.alerts if a.dimension == "exact_match"]
    assert all("bt@1/preference" in a.message for a in s.fired)


def test_no_shift_raises_nothing(em) -> None:
    _plant(em, shift=0.0)
    s = drift(em).compare(0, 1, policy="speech")
    assert s.fired == []
    assert all(d.psi_band == "stable" for d in s.dimensions), [
        (d.label, d.psi, d.binned.psi_counts) for d in s.dimensions
    ]


def test_small_samples_never_alert(em, monkeypatch: pytest.MonkeyPatch) -> None:
    world = seed_policy(em, n_prompts=2, k=5)
    add_scores(
        em,
        "bt",
        "learned",
        "preference",
        {r: 0.0 for r in world["rollouts"][0]} | {r: 5.0 for r in world["rollouts"][1]},
    )
    s = drift(em).compare(0, 1)
    assert s.dimensions[0].psi > 1  # an enormous shift, but 10 scores a side
    assert s.fired == []


def test_planted_length_reward_correlation_fires_hacking_signal(em) -> None:
    world = seed_policy(em, n_prompts=20, k=10, seed=4)  # 200 a side
    rng = np.random.default_rng(4)
    words = world["words"]
    # baseline: the judge ignores length; candidate: its reward follows length almost exactly
    scores = {rid: float(rng.normal(0.5, 0.1)) for rid in world["rollouts"][0]}
    scores |= {rid: 0.01 * words[rid] + float(rng.normal(0, 0.05)) for rid in world["rollouts"][1]}
    add_scores(em, "judge", "generative", "helpfulness", scores)
    # a control reward, equally distributed and unrelated to length, must not fire
    add_scores(
        em,
        "prosody",
        "acoustic",
        "prosody_match",
        {rid: float(rng.uniform()) for v in (0, 1) for rid in world["rollouts"][v]},
    )
    s = drift(em).compare(0, 1)
    hacks = [a for a in s.fired if a.kind.startswith("hacking_")]
    assert {(a.kind, a.dimension) for a in hacks} == {
        ("hacking_length", "helpfulness"),
        ("hacking_duration", "helpfulness"),
    }
    d = next(x for x in s.dimensions if x.dimension == "helpfulness")
    assert d.candidate["corr_length"] > 0.8 and abs(d.baseline["corr_length"]) < 0.2
    assert "length" in next(a for a in hacks if a.kind == "hacking_length").message


def test_report_stores_alerts_and_acknowledge(em) -> None:
    _plant(em, shift=1.0)
    svc = drift(em)
    rep = svc.report(0, 1, bootstrap=20)
    assert rep.fired and len(rep.alert_ids) == len(rep.alerts)
    stored = svc.alerts(policy="speech")
    assert {a.id for a in stored} == set(rep.alert_ids)
    assert {a.report_id for a in stored} == {rep.report_id}
    assert all(a.baseline_version == 0 and a.candidate_version == 1 for a in stored)
    svc.acknowledge(stored[0].id, note="expected: new reward model")
    assert stored[0].id not in {a.id for a in svc.alerts(include_acknowledged=False)}
    with pytest.raises(NotFound, match="does not exist"):
        svc.acknowledge(10**9)
    assert not svc.report(0, 1, store=False, bootstrap=20).alert_ids


def test_roles_and_bad_selections(em) -> None:
    _plant(em, shift=0.0)
    assert drift(em, Role.reviewer).compare(0, 1).dimensions
    with pytest.raises(PermissionDenied, match="dashboard.view"):
        drift(em, Role.rater).compare(0, 1)
    with pytest.raises(NotFound, match="v7 is not registered"):
        drift(em).compare(0, 7, policy="speech")
    with pytest.raises(InvalidInput, match="two different versions"):
        drift(em).compare(1, 1, policy="speech")
    seed_policy(em, name="other", n_prompts=1, k=1)
    with pytest.raises(InvalidInput, match="--policy"):
        drift(em).compare(0, 1)
