"""Altair charts of a drift report, shared by the Streamlit dashboard page and the HTML report.

Each builder takes report parts and returns an Altair chart, or None when there is nothing to
draw (the caller says why in words). Legends are clickable selections, so a lead can isolate one
policy version or rater without leaving the page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from earmark.drift.report import DriftReport, DriftSummary, Thresholds

BASELINE, CANDIDATE = "#4e79a7", "#e15759"
BAND_COLORS = alt.Scale(
    domain=["stable", "moderate", "significant", "too few samples", "n/a"],
    range=["#59a14f", "#f28e2b", "#e15759", "#dddddd", "#bab0ac"],
)
WIDTH = 260


def _side_names(s: DriftSummary) -> tuple[str, str]:
    return f"v{s.selection.baseline} (baseline)", f"v{s.selection.candidate} (candidate)"


def summary_frame(s: DriftSummary) -> pd.DataFrame:
    rows = [dict(d.row(), label=d.label) for d in s.dimensions]
    return pd.DataFrame(rows)


def distributions(s: DriftSummary, columns: int = 3) -> alt.Chart | None:
    """Score histograms (share per bin) of both versions, one panel per reward dimension."""
    base_name, cand_name = _side_names(s)
    rows = []
    for d in s.dimensions:
        if d.binned is None:
            continue
        e = d.binned.hist_edges
        tot = d.binned.hist.sum(axis=1)
        for side, name in ((0, base_name), (1, cand_name)):
            for i in range(d.binned.hist.shape[1]):
                rows.append(
                    {
                        "dimension": d.label,
                        "version": name,
                        "lo": float(e[i]),
                        "hi": float(e[i + 1]),
                        "share": float(d.binned.hist[side, i] / tot[side]),
                        "count": int(d.binned.hist[side, i]),
                    }
                )
    if not rows:
        return None
    pick = alt.selection_point(fields=["version"], bind="legend")
    inner = (
        alt.Chart(pd.DataFrame(rows))
        .mark_rect()
        .encode(
            x=alt.X("lo:Q", title="score", scale=alt.Scale(zero=False)),
            x2="hi:Q",
            y=alt.Y("share:Q", title="share of scores", axis=alt.Axis(format="%")),
            y2=alt.Y2(datum=0),
            color=alt.Color("version:N", scale=alt.Scale(range=[BASELINE, CANDIDATE]), title=None),
            opacity=alt.condition(pick, alt.value(0.55), alt.value(0.08)),
            tooltip=[
                "dimension",
                "version",
                alt.Tooltip("lo:Q", format=".3f"),
                alt.Tooltip("hi:Q", format=".3f"),
                "count",
                alt.Tooltip("share:Q", format=".1%"),
            ],
        )
        .add_params(pick)
        .properties(width=WIDTH, height=150)
    )
    return inner.facet(facet=alt.Facet("dimension:N", title=None), columns=columns).resolve_scale(
        x="independent", y="independent"
    )


def drift_metrics(s: DriftSummary) -> alt.Chart | None:
    """PSI per dimension against the 0.1 / 0.25 bands; the tooltip has every other metric."""
    df = summary_frame(s).dropna(subset=["psi"]) if s.dimensions else pd.DataFrame()
    if df.empty:
        return None
    th = s.thresholds
    bars = (
        alt.Chart(df)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", title=None, sort="-x", axis=alt.Axis(labelLimit=320)),
            x=alt.X("psi:Q", title="PSI (baseline deciles)"),
            color=alt.Color("psi_band:N", scale=BAND_COLORS, title="band"),
            tooltip=[
                "label",
                alt.Tooltip("psi:Q", format=".3f"),
                alt.Tooltip("ks_d:Q", format=".3f"),
                alt.Tooltip("ks_p:Q", format=".2g"),
                alt.Tooltip("js:Q", format=".3f"),
                alt.Tooltip("wasserstein:Q", format=".4f"),
                alt.Tooltip("mean_shift_sd:Q", format="+.2f"),
                "n_baseline",
                "n_candidate",
            ],
        )
    )
    rules = (
        alt.Chart(pd.DataFrame({"x": [th.psi_warn, th.psi_alert], "band": ["moderate", "significant"]}))
        .mark_rule(strokeDash=[4, 3])
        .encode(x="x:Q", color=alt.Color("band:N", scale=BAND_COLORS, legend=None))
    )
    return (bars + rules).properties(width=420, height=alt.Step(22))


def correlations(s: DriftSummary) -> alt.Chart | None:
    """Correlation of each reward with response length and duration, baseline vs candidate."""
    base_name, cand_name = _side_names(s)
    rows = []
    for d in s.dimensions:
        for side, name in ((d.baseline, base_name), (d.candidate, cand_name)):
            for col, what in (("corr_length", "length"), ("corr_duration", "duration")):
                if side and side.get(col) is not None:
                    rows.append({"dimension": d.label, "version": name, "against": what, "r": float(side[col])})
    if not rows:
        return None
    th = s.thresholds
    df = pd.DataFrame(rows)
    panels = []
    for what in ("length", "duration"):
        part = df[df["against"] == what]
        if part.empty:
            continue
        bars = (
            alt.Chart(part)
            .mark_bar()
            .encode(
                y=alt.Y("dimension:N", title=None),
                yOffset="version:N",
                x=alt.X("r:Q", title=f"Pearson r with response {what}", scale=alt.Scale(domain=[-1, 1])),
                color=alt.Color("version:N", scale=alt.Scale(range=[BASELINE, CANDIDATE]), title=None),
                tooltip=["dimension", "version", "against", alt.Tooltip("r:Q", format="+.3f")],
            )
        )
        rules = (
            alt.Chart(pd.DataFrame({"x": [-th.hacking_corr, th.hacking_corr]}))
            .mark_rule(strokeDash=[4, 3], color="#e15759")
            .encode(x="x:Q")
        )
        panels.append((bars + rules).properties(width=WIDTH, height=alt.Step(12)))
    return alt.hconcat(*panels) if panels else None


def windows(rows: Sequence[dict[str, Any]], columns: int = 3) -> alt.Chart | None:
    """Mean score per time window and policy version, with the 10-90% band."""
    if not rows:
        return None
    df = pd.DataFrame(rows)
    df["version"] = "v" + df["version"].astype(str)
    pick = alt.selection_point(fields=["version"], bind="legend")
    base = alt.Chart().encode(x=alt.X("window_start:T", title=None), color=alt.Color("version:N", title="policy"))
    band = base.mark_area().encode(
        y=alt.Y("p10:Q", title="score"), y2="p90:Q", opacity=alt.condition(pick, alt.value(0.15), alt.value(0.02))
    )
    line = (
        base.mark_line(point=True)
        .encode(
            y="mean:Q",
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=[
                "label",
                "version",
                "window_start:T",
                "n",
                alt.Tooltip("mean:Q", format=".3f"),
                alt.Tooltip("p10:Q", format=".3f"),
                alt.Tooltip("p90:Q", format=".3f"),
            ],
        )
        .add_params(pick)
    )
    return (
        alt.layer(band, line, data=df)
        .properties(width=WIDTH, height=150)
        .facet(facet=alt.Facet("label:N", title=None), columns=columns)
        .resolve_scale(y="independent")
    )


def judge_agreement(rows: Sequence[dict[str, Any]], th: Thresholds) -> alt.Chart | None:
    if not rows:
        return None
    df = pd.DataFrame(rows)
    df["judge"] = df["name"] + "@" + df["version"] + "/" + df["dimension"]
    line = (
        alt.Chart(df)
        .mark_line(point=True)
        .encode(
            x=alt.X("window_start:T", title=None),
            y=alt.Y(
                "agreement:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="agrees with raters"
            ),
            color=alt.Color("judge:N", title=None),
            tooltip=["judge", "window_start:T", "n", alt.Tooltip("agreement:Q", format=".1%")],
        )
    )
    rule = (
        alt.Chart(pd.DataFrame({"y": [th.judge_agreement_min]}))
        .mark_rule(strokeDash=[4, 3], color="#e15759")
        .encode(y="y:Q")
    )
    return (line + rule).properties(width=520, height=200)


def overoptimization(rows: Sequence[dict[str, Any]]) -> alt.Chart | None:
    """Gao et al.'s picture: proxy rewards and human win rate against KL (or version when no KL)."""
    if not rows:
        return None
    has_kl = all(r.get("kl") is not None for r in rows)
    long = []
    for r in rows:
        x = r["kl"] ** 0.5 if has_kl else r["version"]
        for key, v in r["rewards"].items():
            long.append({"x": x, "version": f"v{r['version']}", "series": key, "value": v["mean"]})
        if r.get("human_win_rate") is not None:
            long.append(
                {
                    "x": x,
                    "version": f"v{r['version']}",
                    "series": "human win rate vs baseline",
                    "value": r["human_win_rate"],
                }
            )
    if not long:
        return None
    pick = alt.selection_point(fields=["series"], bind="legend")
    return (
        alt.Chart(pd.DataFrame(long))
        .mark_line(point=True)
        .encode(
            x=alt.X("x:Q", title="sqrt(KL from reference)" if has_kl else "policy version (no KL recorded)"),
            y=alt.Y("value:Q", title="mean reward / win rate"),
            color=alt.Color("series:N", title=None),
            strokeDash=alt.condition(
                "datum.series == 'human win rate vs baseline'", alt.value([1, 0]), alt.value([4, 2])
            ),
            opacity=alt.condition(pick, alt.value(1.0), alt.value(0.15)),
            tooltip=["version", "series", alt.Tooltip("value:Q", format=".3f")],
        )
        .add_params(pick)
        .properties(width=520, height=220)
    )


def trap(result: Any) -> alt.Chart | None:
    rows = [
        {"round": r["round"], "series": name, "value": r[key]}
        for r in result.rounds
        for key, name in (("verifiable", "verifiable (0-1)"), ("human", "human naturalness/prosody/persona (0-1)"))
        if r[key] is not None
    ]
    if not rows:
        return None
    lines = (
        alt.Chart(pd.DataFrame(rows))
        .mark_line(point=True)
        .encode(
            x=alt.X("round:O", title="round"),
            y=alt.Y("value:Q", title="mean (0-1)"),
            color=alt.Color("series:N", title=None, scale=alt.Scale(range=["#4e79a7", "#f28e2b"])),
            tooltip=["round", "series", alt.Tooltip("value:Q", format=".3f")],
        )
    )
    flagged = [{"round": s["to_round"]} for s in result.steps if s["flagged"]]
    if not flagged:
        return lines.properties(width=520, height=200)
    marks = (
        alt.Chart(pd.DataFrame(flagged))
        .mark_rule(color="#e15759", strokeWidth=3, opacity=0.4)
        .encode(x="round:O", tooltip=[alt.Tooltip("round:O", title="trap flagged at round")])
    )
    return (lines + marks).properties(width=520, height=200)


def leaderboard(raw: Any, styled: Any) -> alt.Chart | None:
    rows = []
    for lb, name in ((raw, "raw"), (styled, "style-controlled")):
        if lb is None:
            continue
        for r in lb.rows():
            rows.append({**r, "model": name})
    if not rows:
        return None
    df = pd.DataFrame(rows)
    base = alt.Chart(df).encode(
        y=alt.Y("version:N", title=None, sort=alt.EncodingSortField("rating", order="descending")),
        yOffset="model:N",
        color=alt.Color("model:N", title=None),
    )
    err = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("rating_low:Q", title="rating (Elo scale, 95% CI)", scale=alt.Scale(zero=False)), x2="rating_high:Q"
    )
    pts = base.mark_point(filled=True, size=70).encode(
        x="rating:Q",
        tooltip=[
            "model",
            "version",
            alt.Tooltip("rating:Q", format=".0f"),
            alt.Tooltip("rating_low:Q", format=".0f"),
            alt.Tooltip("rating_high:Q", format=".0f"),
            alt.Tooltip("win_vs_anchor:Q", format=".1%"),
            "comparisons",
        ],
    )
    return (err + pts).properties(width=480, height=alt.Step(18))


def raters(drift: Any) -> list[tuple[str, alt.Chart]]:
    """(title, chart) for leniency over time, gold accuracy over time and alpha per campaign."""
    out = []
    pick = alt.selection_point(fields=["rater"], bind="legend")
    if drift.leniency:
        out.append(
            (
                "Rater leniency (rating minus the item's mean)",
                alt.Chart(pd.DataFrame(drift.leniency))
                .mark_line(point=True)
                .encode(
                    x=alt.X("window_start:T", title=None),
                    y=alt.Y("leniency:Q", title="points on 1-5"),
                    color="rater:N",
                    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.1)),
                    tooltip=["rater", "window_start:T", "n", alt.Tooltip("leniency:Q", format="+.2f")],
                )
                .add_params(pick)
                .properties(width=480, height=200),
            )
        )
    if drift.gold:
        pick2 = alt.selection_point(fields=["rater"], bind="legend")
        out.append(
            (
                "Gold accuracy",
                alt.Chart(pd.DataFrame(drift.gold))
                .mark_line(point=True)
                .encode(
                    x=alt.X("window_start:T", title=None),
                    y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
                    color="rater:N",
                    opacity=alt.condition(pick2, alt.value(1.0), alt.value(0.1)),
                    tooltip=["rater", "window_start:T", "n", alt.Tooltip("accuracy:Q", format=".0%")],
                )
                .add_params(pick2)
                .properties(width=480, height=200),
            )
        )
    alphas = [a for a in drift.alpha if a["alpha"] is not None]
    if alphas:
        df = pd.DataFrame(alphas)
        low = min(-0.2, float(df["alpha"].min()))
        out.append(
            (
                "Agreement per campaign (Krippendorff's alpha)",
                alt.Chart(df)
                .mark_bar(clip=True)
                .encode(
                    x=alt.X("alpha:Q", scale=alt.Scale(domain=[low, 1])),
                    y=alt.Y("dimension:N", title=None),
                    color=alt.Color("campaign:N"),
                    yOffset="campaign:N",
                    tooltip=["campaign", "dimension", "alpha", "pairable"],
                )
                .properties(width=480, height=alt.Step(14)),
            )
        )
    return out


def all_charts(rep: DriftReport) -> list[tuple[str, str, alt.Chart | None]]:
    """(section, title, chart) in report order."""
    s = rep.summary
    out: list[tuple[str, str, alt.Chart | None]] = [
        ("Distributions", "Score distributions, baseline vs candidate", distributions(s)),
        ("Distributions", "Drift per dimension (PSI)", drift_metrics(s)),
        ("Distributions", "Scores over time per policy version", windows(rep.windows)),
        ("Reward hacking", "Reward vs response length and duration", correlations(s)),
        (
            "Reward hacking",
            "Generative judge vs human raters over time",
            judge_agreement(rep.judge_agreement, s.thresholds),
        ),
        (
            "Reward hacking",
            "Over-optimization: proxy reward and human win rate per version",
            overoptimization(rep.overoptimization),
        ),
        ("Verifiable-reward trap", "Verifiable scores vs human ratings per round", trap(rep.trap)),
        (
            "Leaderboard",
            "Bradley-Terry ratings from human A/B judgments",
            leaderboard(rep.leaderboard, rep.leaderboard_style),
        ),
    ]
    out += [("Raters", title, chart) for title, chart in raters(rep.raters)]
    return out
