"""Drift compares on the same prompts by default and says which; every metric carries a bootstrap
interval; PSI bands only where each side has enough scores."""

from __future__ import annotations

import numpy as np
from drift_fixtures import add_scores, drift, seed_policy
from sqlalchemy import text

from earmark.drift.report import TOO_FEW


def _world(em):
    """v0 on 20 prompts, v1 (the same policy) on the harder half only: scores depend on the prompt."""
    w = seed_policy(em, versions=(0, 1), n_prompts=20, k=30)
    pid_of = {}
    with em.session() as s, s.begin():
        prompts = [p for (p,) in s.execute(text("SELECT id FROM prompts ORDER BY external_id")).all()]
        easy = prompts[:10]
        s.execute(
            text("DELETE FROM rollouts WHERE policy_id = :p AND prompt_id = ANY(:easy)"),
            {"p": w["policies"][1].id, "easy": easy},
        )
        for rid, pid in s.execute(text("SELECT id, prompt_id FROM rollouts")).all():
            pid_of[rid] = prompts.index(pid)
    rng = np.random.default_rng(0)
    scores = {rid: i / 20 + rng.normal(0, 0.05) for rid, i in pid_of.items()}
    add_scores(em, "prosody", "acoustic", "prosody", scores)
    few = dict(list(scores.items())[:3] + list(scores.items())[-3:])
    add_scores(em, "judge", "generative", "overall", few)
    return w


def test_shared_prompts_by_default_and_said(em) -> None:
    _world(em)
    svc = drift(em)
    shared = svc.compare(0, 1, policy="speech")
    assert shared.selection.prompts == "shared"
    assert shared.prompt_set == {"mode": "shared", "baseline": 20, "candidate": 10, "shared": 10}
    assert "10 prompt(s) both v0 and v1" in shared.prompt_set_note
    (d,) = [d for d in shared.dimensions if d.dimension == "prosody"]
    assert d.baseline["n"] == d.candidate["n"] == 300
    assert d.psi_band == "stable" and d.psi < 0.1
    lo, hi = d.mean_diff_ci
    assert lo <= 0 <= hi  # the same policy: no shift

    everything = svc.compare(0, 1, policy="speech", prompts="all")
    assert "the sets differ" in everything.prompt_set_note
    (d_all,) = [d for d in everything.dimensions if d.dimension == "prosody"]
    assert d_all.baseline["n"] == 600 and d_all.psi_band == "significant"  # prompts, not the policy
    assert d_all.mean_diff_ci[0] > 0.1


def test_intervals_and_bands_need_enough_samples(em) -> None:
    _world(em)
    summary = drift(em).compare(0, 1, policy="speech", prompts="all")
    by_dim = {d.dimension: d for d in summary.dimensions}
    prosody, judge = by_dim["prosody"], by_dim["overall"]
    assert prosody.psi_ci[0] <= prosody.psi <= prosody.psi_ci[1] + 1e-9
    assert prosody.mean_diff_ci[0] <= prosody.mean_diff <= prosody.mean_diff_ci[1]
    assert judge.baseline["n"] == 3 and judge.psi_band == TOO_FEW  # a PSI on 3 scores is not a finding
    assert judge.psi_ci is not None and judge.psi_ci[1] - judge.psi_ci[0] > prosody.psi_ci[1] - prosody.psi_ci[0]
    row = judge.row()
    assert row["psi_band"] == TOO_FEW and row["psi_ci_low"] is not None
    assert not [a for a in summary.alerts if a.dimension == "overall"]
