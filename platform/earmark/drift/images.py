"""PNG images of the main drift charts, drawn with matplotlib (no browser, no network).

They sit beside the HTML report for slides and bug reports, and stand in for the interactive charts
inside the HTML when the Vega libraries cannot be inlined (vl-convert-python not installed).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from earmark.drift.report import DriftReport

BASELINE, CANDIDATE, ALERT = "#4e79a7", "#e15759", "#e15759"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def distributions(rep: DriftReport) -> bytes | None:
    dims = [d for d in rep.summary.dimensions if d.binned is not None]
    if not dims:
        return None
    plt = _plt()
    cols = min(3, len(dims))
    rows = math.ceil(len(dims) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    sel = rep.summary.selection
    for ax, d in zip(axes.flat, dims):
        m = d.binned
        assert m is not None  # filtered above
        e = m.hist_edges
        width = np.diff(e) if e[-1] > e[0] else np.array([1.0])
        for side, color, name in ((0, BASELINE, f"v{sel.baseline}"), (1, CANDIDATE, f"v{sel.candidate}")):
            share = m.hist[side] / m.hist[side].sum()
            ax.bar(e[:-1], share, width=width, align="edge", alpha=0.5, color=color, label=name)
        ax.set_title(
            f"{d.label}\nPSI {d.psi:.3f} ({d.psi_band})",
            fontsize=8,
            color=ALERT if d.psi_band == "significant" else "black",
        )
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(dims) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{sel.policy}: score distributions v{sel.baseline} vs v{sel.candidate}", fontsize=10)
    fig.tight_layout()
    return _png(fig)


def drift_metrics(rep: DriftReport) -> bytes | None:
    dims = [d for d in rep.summary.dimensions if d.psi is not None]
    if not dims:
        return None
    plt = _plt()
    th = rep.summary.thresholds
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(dims) + 1.2))
    colors = {"stable": "#59a14f", "moderate": "#f28e2b", "significant": "#e15759"}
    ax.barh([d.label for d in dims], [d.psi for d in dims], color=[colors.get(d.psi_band, "#bab0ac") for d in dims])
    for x in (th.psi_warn, th.psi_alert):
        ax.axvline(x, ls="--", color="grey", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("PSI (baseline deciles); dashed: 0.1 moderate, 0.25 significant")
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)


def windows(rep: DriftReport) -> bytes | None:
    if not rep.windows:
        return None
    plt = _plt()
    labels = sorted({r["label"] for r in rep.windows})
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.4 * rows), squeeze=False)
    for ax, label in zip(axes.flat, labels):
        part = [r for r in rep.windows if r["label"] == label]
        for v in sorted({r["version"] for r in part}):
            pts = sorted((r["window_start"], r["mean"]) for r in part if r["version"] == v)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"v{v}")
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(labels) :]:
        ax.axis("off")
    fig.autofmt_xdate()
    fig.tight_layout()
    return _png(fig)


def trap(rep: DriftReport) -> bytes | None:
    rounds = rep.trap.rounds
    if not rounds:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3))
    for key, color, name in (("verifiable", "#4e79a7", "verifiable"), ("human", "#f28e2b", "human (0-1)")):
        pts = [(r["round"], r[key]) for r in rounds if r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=name)
    for s in rep.trap.steps:
        if s["flagged"]:
            ax.axvspan(s["from_round"], s["to_round"], color=ALERT, alpha=0.12)
    ax.set_xlabel("round")
    ax.set_title(
        "verifiable-reward trap" + (" (FLAGGED)" if rep.trap.flagged else ""),
        fontsize=9,
        color=ALERT if rep.trap.flagged else "black",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


def leaderboard(rep: DriftReport) -> bytes | None:
    boards = [
        (lb, name)
        for lb, name in ((rep.leaderboard, "raw"), (rep.leaderboard_style, "style-controlled"))
        if lb is not None
    ]
    if not boards:
        return None
    plt = _plt()
    versions = boards[0][0].versions
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(versions) + 1.2))
    for j, (lb, name) in enumerate(boards):
        y = np.arange(len(versions)) + 0.2 * (j - 0.5 * (len(boards) - 1))
        rows = {r["version"]: r for r in lb.rows()}
        vals = [rows[v] for v in versions]
        ax.errorbar(
            [r["rating"] for r in vals],
            y,
            xerr=[[r["rating"] - r["rating_low"] for r in vals], [r["rating_high"] - r["rating"] for r in vals]],
            fmt="o",
            capsize=3,
            label=name,
        )
    ax.set_yticks(np.arange(len(versions)), versions)
    ax.set_xlabel("Bradley-Terry rating (Elo scale), 95% bootstrap CI")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)


IMAGES = (
    ("distributions", distributions),
    ("drift_metrics", drift_metrics),
    ("windows", windows),
    ("trap", trap),
    ("leaderboard", leaderboard),
)


def write_pngs(rep: DriftReport, out_dir: Path) -> dict[str, Path]:
    """Draw every image that has data; returns {name: path}."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, draw in IMAGES:
        png = draw(rep)
        if png is not None:
            path = out_dir / f"{name}.png"
            path.write_bytes(png)
            written[name] = path
    return written
