"""A self-contained HTML drift report: one file that opens offline, anywhere.

With vl-convert-python installed, the Vega, Vega-Lite and Vega-Embed libraries are inlined once
(about 900 kB) and every Altair chart is embedded as its Vega-Lite JSON, so charts keep their
tooltips and legend selections. Without it, the matplotlib PNGs are embedded as base64 instead.
Tables (summary, alerts, leaderboard, trap) are plain HTML either way.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

from earmark.drift.report import DriftReport

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px;margin-bottom:4px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:18px 0 6px} .meta{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f5f5f5} td.l,th.l{text-align:left} .alert{color:#b00020;font-weight:600} .warning{color:#a15c00}
.band-significant{background:#fde2e2} .band-moderate{background:#fff1d6} .ok{color:#2e7d32;font-weight:600}
.chart{margin:6px 0 18px} img{max-width:100%}
"""


def vega_bundle() -> str | None:
    """The Vega + Vega-Lite + Vega-Embed JavaScript, from vl-convert-python; None when it is absent."""
    try:
        import vl_convert as vlc
    except ImportError:
        return None
    return vlc.javascript_bundle()  # type: ignore[call-arg]  # the stub marks the optional snippet required


def _fmt(x: Any, spec: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return format(x, spec)
    return html.escape(str(x))


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str, str]], row_class: Any = None) -> str:
    head = "".join(f"<th class='{'l' if spec == 's' else ''}'>{html.escape(title)}</th>" for _, title, spec in cols)
    body = []
    for r in rows:
        cls = row_class(r) if row_class else ""
        cells = "".join(
            f"<td class='{'l' if spec == 's' else ''}'>{_fmt(r.get(key), spec) if spec != 's' else html.escape(str(r.get(key, '')))}</td>"
            for key, _, spec in cols
        )
        body.append(f"<tr class='{cls}'>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


SUMMARY_COLS = [
    ("label", "reward model / dimension", "s"),
    ("kind", "kind", "s"),
    ("n_baseline", "n base", "d"),
    ("n_candidate", "n cand", "d"),
    ("mean_baseline", "mean base", ".3f"),
    ("mean_candidate", "mean cand", ".3f"),
    ("mean_shift_sd", "shift (SD)", "+.2f"),
    ("mean_diff", "mean diff", "+.3f"),
    ("mean_diff_ci_low", "95% CI low", "+.3f"),
    ("mean_diff_ci_high", "95% CI high", "+.3f"),
    ("psi", "PSI", ".3f"),
    ("psi_ci_low", "PSI CI low", ".3f"),
    ("psi_ci_high", "PSI CI high", ".3f"),
    ("psi_band", "band", "s"),
    ("ks_d", "KS D", ".3f"),
    ("ks_p", "KS p", ".2g"),
    ("js", "JS", ".3f"),
    ("wasserstein", "Wasserstein", ".4f"),
    ("corr_length_candidate", "r(length)", "+.2f"),
    ("corr_duration_candidate", "r(duration)", "+.2f"),
]


def _chart_block(chart: Any, png: bytes | None, bundle: str | None, idx: int) -> str:
    if bundle is not None and chart is not None:
        spec = json.dumps(chart.to_dict(), default=str).replace("</", "<\\/")
        return (
            f"<div class='chart' id='vis{idx}'></div><script>vegaEmbed('#vis{idx}', {spec}, "
            "{actions: false}).catch(console.error);</script>"
        )
    if png is not None:
        return f"<div class='chart'><img alt='chart {idx}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></div>"
    return "<p class='meta'>(chart needs vl-convert-python to be embedded; see the PNG files and tables)</p>"


def render(rep: DriftReport, pngs: dict[str, bytes] | None = None, *, inline_vega: bool = True) -> str:
    from earmark.drift import charts

    s = rep.summary
    sel = s.selection
    bundle = vega_bundle() if inline_vega else None
    pngs = pngs or {}
    png_for = {
        "Score distributions, baseline vs candidate": "distributions",
        "Drift per dimension (PSI)": "drift_metrics",
        "Scores over time per policy version": "windows",
        "Verifiable scores vs human ratings per round": "trap",
        "Bradley-Terry ratings from human A/B judgments": "leaderboard",
    }
    parts = [
        (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>drift {html.escape(sel.policy)} "
            f"v{sel.baseline} vs v{sel.candidate}</title><style>{CSS}</style>"
        )
    ]
    if bundle:
        parts.append(f"<script>{bundle}</script>")
    parts.append("</head><body>")
    parts.append(f"<h1>Reward drift: {html.escape(sel.policy)} v{sel.candidate} vs baseline v{sel.baseline}</h1>")
    filters = (
        ", ".join(
            f"{k}={','.join(v)}"
            for k, v in (("regimes", sel.regimes), ("dimensions", sel.dimensions), ("reward models", sel.reward_models))
            if v
        )
        or "all scores"
    )
    parts.append(
        f"<p class='meta'>generated {s.generated_at:%Y-%m-%d %H:%M UTC} · {html.escape(filters)} · "
        f"alerts: PSI &ge; {s.thresholds.psi_alert}, KS D &ge; {s.thresholds.ks_min_statistic}, mean shift &ge; "
        f"{s.thresholds.mean_shift} SD, each also significant at p &lt; {s.thresholds.pvalue}, with at least "
        f"{s.thresholds.min_samples} scores a side (fewer: no PSI band); intervals are bootstrap 95%</p>"
    )
    parts.append(f"<p class='meta'>{html.escape(s.prompt_set_note)}</p>")
    fired = rep.fired
    parts.append("<h2>Alerts</h2>")
    if fired or rep.alerts:
        parts.append(
            "<ul>"
            + "".join(
                f"<li class='{a.severity}'>[{a.severity}] {html.escape(a.message)}</li>"
                for a in sorted(rep.alerts, key=lambda a: a.severity != "alert")
            )
            + "</ul>"
        )
    if not fired:
        parts.append("<p class='ok'>No alert fired: the candidate may proceed.</p>")
    rows = [dict(d.row(), label=d.label) for d in s.dimensions]
    parts.append("<h2>Summary</h2>")
    parts.append(_table(rows, SUMMARY_COLS, lambda r: f"band-{r.get('psi_band')}"))
    section = None
    for i, (sec, title, chart) in enumerate(charts.all_charts(rep)):
        if sec != section:
            parts.append(f"<h2>{html.escape(sec)}</h2>")
            section = sec
            if sec == "Verifiable-reward trap":
                cls = "alert" if rep.trap.flagged else "meta"
                parts.append(f"<p class='{cls}'>{html.escape(rep.trap.message)}</p>")
        parts.append(f"<h3>{html.escape(title)}</h3>")
        if chart is None:
            parts.append("<p class='meta'>no data for this chart yet</p>")
            continue
        parts.append(_chart_block(chart, pngs.get(png_for.get(title, "")), bundle, i))
    for lb, name in ((rep.leaderboard, "raw"), (rep.leaderboard_style, "style-controlled")):
        if lb is not None:
            extra = ""
            if lb.style_coef:
                extra = " · style coefficients: " + ", ".join(
                    f"{k} {v[0]:+.2f} [{v[1]:+.2f}, {v[2]:+.2f}]" for k, v in lb.style_coef.items()
                )
            parts.append(
                f"<h3>Leaderboard ({name}, anchor {html.escape(lb.anchor)}, {lb.bootstrap} bootstrap "
                f"resamples{html.escape(extra)})</h3>"
            )
            parts.append(
                _table(
                    lb.rows(),
                    [
                        ("rank", "#", "d"),
                        ("version", "version", "s"),
                        ("rating", "rating", ".0f"),
                        ("rating_low", "95% low", ".0f"),
                        ("rating_high", "95% high", ".0f"),
                        ("win_vs_anchor", "P(win vs anchor)", ".1%"),
                        ("comparisons", "comparisons", "d"),
                    ],
                )
            )
    if rep.trap.rounds:
        parts.append("<h3>Trap: per round</h3>")
        parts.append(
            _table(
                rep.trap.rounds,
                [
                    ("round", "round", "d"),
                    ("verifiable", "verifiable", ".3f"),
                    ("human", "human (0-1)", ".3f"),
                    ("n_human", "human ratings", "d"),
                ],
            )
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(rep: DriftReport, out_dir: Path, *, inline_vega: bool = True) -> dict[str, Path]:
    """report.html (self-contained), one PNG per main chart, and summary.json; returns their paths."""
    from earmark.drift.images import write_pngs
    from earmark.drift.report import summary_json

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_pngs(rep, out_dir)
    pngs = {k: p.read_bytes() for k, p in paths.items()}
    page = out_dir / "report.html"
    page.write_text(render(rep, pngs, inline_vega=inline_vega), encoding="utf-8")
    summary = out_dir / "summary.json"
    data = summary_json(rep.summary)
    data["alerts"] = [a.to_dict() for a in rep.alerts]
    data["trap"] = {"flagged": rep.trap.flagged, "message": rep.trap.message}
    summary.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    return {"html": page, "summary": summary, **paths}
