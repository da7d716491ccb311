"""Dashboard: campaign progress and rater agreement; reward drift and hacking signals are on the
drift page (app_pages/drift.py)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from annotation_ui import session

principal, em = session.page_guard("dashboard.view")
st.title("Dashboard")
session.show_flashes()

campaigns = em.campaigns.list()
if not campaigns:
    st.info("No campaigns yet.")
    st.stop()

progress = {c.id: em.campaigns.progress(c.id) for c in campaigns}
long = pd.DataFrame(
    [
        {"campaign": c.name, "state": state, "tasks": n}
        for c in campaigns
        for state, n in (
            ("done", progress[c.id].done),
            ("leased", progress[c.id].leased),
            ("open", progress[c.id].open),
        )
    ]
)
st.markdown("#### Task progress")
st.altair_chart(
    alt.Chart(long)
    .mark_bar()
    .encode(
        y=alt.Y("campaign:N", title=None, sort="-x"),
        x=alt.X("tasks:Q", stack="zero", title="tasks"),
        color=alt.Color(
            "state:N", scale=alt.Scale(domain=["done", "leased", "open"], range=["#59a14f", "#f28e2b", "#bab0ac"])
        ),
        order=alt.Order("state:N"),
        tooltip=["campaign", "state", "tasks"],
    )
    .properties(height=alt.Step(32)),
    width="stretch",
)

names = {c.id: c.name for c in campaigns}
cid = st.selectbox("Campaign", list(names), format_func=lambda i: names[i], key="dash-campaign")
left, right = st.columns(2, gap="large")
with left:
    st.markdown("#### Judgments per rater")
    per_rater = progress[cid].per_rater
    if per_rater:
        df = pd.DataFrame({"rater": list(per_rater), "judgments": list(per_rater.values())})
        st.altair_chart(
            alt.Chart(df)
            .mark_bar(color="#4e79a7")
            .encode(x=alt.X("judgments:Q"), y=alt.Y("rater:N", sort="-x", title=None), tooltip=["rater", "judgments"])
            .properties(height=alt.Step(28)),
            width="stretch",
        )
    else:
        st.caption("No judgments yet.")
with right:
    st.markdown("#### Agreement (Krippendorff's alpha)")
    if session.allowed(principal, "judgments.review"):
        alphas = [a for a in em.quality.agreement(cid) if a.alpha is not None]
        if alphas:
            df = pd.DataFrame([{"dimension": a.dimension, "alpha": a.alpha, "items": a.units} for a in alphas])
            low = min(-0.2, float(df["alpha"].min()))  # alpha is negative when raters systematically disagree
            st.altair_chart(
                alt.Chart(df)
                .mark_bar(color="#76b7b2", clip=True)
                .encode(
                    x=alt.X("alpha:Q", scale=alt.Scale(domain=[low, 1])),
                    y=alt.Y("dimension:N", title=None),
                    tooltip=["dimension", "alpha", "items"],
                )
                .properties(height=alt.Step(28)),
                width="stretch",
            )
            st.caption("0.8 and above: reliable; 0.667-0.8: tentative conclusions only (Krippendorff, 2004).")
        else:
            st.caption("Not enough overlapping judgments yet (each item needs two or more raters).")
