"""Reward drift dashboard page: ``render(em)`` with services bound to the logged-in reviewer/admin.

Filters (policy, baseline and candidate versions, regimes, dimensions, time window) drive one
drift report computed in PostgreSQL; tabs show distributions, hacking signals, the verifiable-
reward trap, the policy leaderboard, rater drift and the stored alerts. Wire it into the app
with ``st.Page`` under the ``dashboard.view`` permission; it checks the role again itself.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from earmark.drift import charts
from earmark.errors import EarmarkError, PermissionDenied
from earmark.services.drift import DriftService

WINDOWS = {"6 hours": 6, "1 day": 24, "1 week": 168}


def _service(em: Any) -> DriftService:
    return getattr(em, "drift", None) or DriftService(em.ctx)


def _chart(chart: Any, empty: str) -> None:
    if chart is None:
        st.caption(empty)
    else:
        st.altair_chart(chart, width="content")


def _filters(catalog: dict[str, Any]) -> dict[str, Any] | None:
    policies = {n: vs for n, vs in catalog["policies"].items() if len(vs) >= 2}
    if not policies:
        st.info(
            "No policy has two versions yet. Register a trained version (v+1) and score its rollouts; "
            "drift compares a candidate version with a baseline."
        )
        return None
    c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
    policy = c1.selectbox("Policy", sorted(policies), key="drift-policy")
    versions = policies[policy]
    baseline = c2.selectbox("Baseline", versions, index=0, key="drift-baseline", format_func=lambda v: f"v{v}")
    others = [v for v in versions if v != baseline]
    candidate = c3.selectbox(
        "Candidate", others, index=len(others) - 1, key="drift-candidate", format_func=lambda v: f"v{v}"
    )
    window = c4.selectbox("Time window", list(WINDOWS), index=1, key="drift-window")
    c5, c6 = st.columns(2)
    regimes = c5.multiselect("Regimes", catalog["regimes"], key="drift-regimes", placeholder="all regimes")
    dims = c6.multiselect("Dimensions", catalog["dimensions"], key="drift-dims", placeholder="all dimensions")
    return {
        "policy": policy,
        "baseline": baseline,
        "candidate": candidate,
        "hours": WINDOWS[window],
        "regimes": regimes,
        "dimensions": dims,
    }


def _alerts(rep: Any) -> None:
    fired = rep.fired
    if fired:
        st.error(f"{len(fired)} alert(s) fired for v{rep.summary.selection.candidate}")
    else:
        st.success("No alert fired: the candidate's reward distributions match the baseline within the thresholds.")
    for a in sorted(rep.alerts, key=lambda a: a.severity != "alert"):
        (st.error if a.severity == "alert" else st.warning)(f"**{a.kind}**: {a.message}")


def _summary_table(rep: Any) -> None:
    df = charts.summary_frame(rep.summary)
    if df.empty:
        st.caption("No reward scores for these versions and filters.")
        return
    cols = [
        "label",
        "kind",
        "n_baseline",
        "n_candidate",
        "mean_baseline",
        "mean_candidate",
        "mean_shift_sd",
        "psi",
        "psi_band",
        "ks_d",
        "ks_p",
        "js",
        "wasserstein",
        "corr_length_candidate",
        "corr_duration_candidate",
    ]
    fmt = {
        c: st.column_config.NumberColumn(format="%.3f") for c in cols if c.startswith(("mean_", "psi", "js", "ks_d"))
    }
    fmt |= {
        "ks_p": st.column_config.NumberColumn(format="%.2e"),
        "wasserstein": st.column_config.NumberColumn(format="%.4f"),
        "corr_length_candidate": st.column_config.NumberColumn("r(length)", format="%+.2f"),
        "corr_duration_candidate": st.column_config.NumberColumn("r(duration)", format="%+.2f"),
    }
    fmt.pop("psi_band", None)
    st.dataframe(df[cols], hide_index=True, width="stretch", column_config=fmt)


def _stored(svc: DriftService, policy: str) -> None:
    rows = svc.alerts(policy=policy, limit=200)
    if not rows:
        st.caption("No alerts stored for this policy yet (`earmark drift report` stores them).")
        return
    df = pd.DataFrame(
        [
            {
                "id": a.id,
                "when": a.created_at,
                "severity": a.severity,
                "kind": a.kind,
                "versions": f"v{a.baseline_version}→v{a.candidate_version}",
                "message": a.message,
                "acknowledged": a.acknowledged_at is not None,
            }
            for a in rows
        ]
    )
    st.dataframe(df, hide_index=True, width="stretch")
    open_ids = [a.id for a in rows if a.acknowledged_at is None]
    if open_ids:
        c1, c2 = st.columns([1, 3])
        pick = c1.selectbox("Alert", open_ids, key="drift-ack-id")
        note = c2.text_input("Note", key="drift-ack-note", placeholder="why this is expected, or the follow-up")
        if st.button("Acknowledge", key="drift-ack"):
            svc.acknowledge(int(pick), note=note)
            st.rerun()


def render(em: Any) -> None:
    st.title("Reward drift")
    svc = _service(em)
    try:
        catalog = svc.catalog()
    except PermissionDenied as exc:
        st.error(f"Not allowed: {exc.message}")
        return
    f = _filters(catalog)
    if f is None:
        return
    try:
        with st.spinner("Comparing distributions in the database…"):
            rep = svc.report(
                f["baseline"],
                f["candidate"],
                policy=f["policy"],
                regimes=f["regimes"],
                dimensions=f["dimensions"],
                store=False,
                hours=f["hours"],
            )
    except EarmarkError as exc:
        st.error(f"Could not compute the drift report: {exc.message}")
        return
    s = rep.summary
    tabs = st.tabs(
        [
            "Overview",
            "Distributions",
            "Reward hacking",
            "Verifiable-reward trap",
            "Leaderboard",
            "Raters",
            "Stored alerts",
        ]
    )
    with tabs[0]:
        _alerts(rep)
        if rep.alerts and st.button("Store these alerts", key="drift-store"):
            _, ids = svc.store_alerts(s.selection, rep.alerts)
            st.success(f"Stored {len(ids)} alert(s).")
        _summary_table(rep)
        _chart(charts.drift_metrics(s), "No dimension has scores for both versions.")
        st.caption("PSI bands (Siddiqi, 2006): below 0.1 stable, 0.1-0.25 moderate, 0.25 and above significant.")
    with tabs[1]:
        _chart(charts.distributions(s), "No dimension has scores for both versions.")
        st.markdown("#### Over time")
        _chart(charts.windows(rep.windows), "No scores in the selected windows.")
    with tabs[2]:
        st.markdown("#### Reward vs response length and duration")
        _chart(charts.correlations(s), "No correlations (duration or length missing).")
        st.markdown("#### Generative judge vs human raters")
        _chart(
            charts.judge_agreement(rep.judge_agreement, s.thresholds),
            "No pairwise human judgments on items a generative judge has scored.",
        )
        st.markdown("#### Over-optimization (Gao et al., 2023)")
        _chart(charts.overoptimization(rep.overoptimization), "No reward scores per version.")
    with tabs[3]:
        (st.error if rep.trap.flagged else st.info)(rep.trap.message)
        _chart(charts.trap(rep.trap), "No round has both verifiable scores and human ratings yet.")
    with tabs[4]:
        _chart(
            charts.leaderboard(rep.leaderboard, rep.leaderboard_style),
            "No pairwise human judgments between two versions of this policy yet.",
        )
        if rep.leaderboard_style is not None and rep.leaderboard_style.style_coef:
            st.caption(
                "Style coefficients (log-odds per SD of the difference, 95% CI): "
                + ", ".join(
                    f"{k} {v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" for k, v in rep.leaderboard_style.style_coef.items()
                )
            )
        if rep.leaderboard is not None:
            st.dataframe(pd.DataFrame(rep.leaderboard.rows()), hide_index=True, width="stretch")
    with tabs[5]:
        blocks = charts.raters(rep.raters)
        if not blocks:
            st.caption("No overlapping ratings or gold items yet.")
        for title, chart in blocks:
            st.markdown(f"#### {title}")
            st.altair_chart(chart, width="content")
    with tabs[6]:
        _stored(svc, f["policy"])
