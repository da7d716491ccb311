"""The drift summary of a candidate policy version against a baseline, and the alerts it raises.

``summarize`` runs the in-database aggregates (``earmark.drift.sql``) and turns them into one
``DimensionDrift`` per reward model version and dimension; ``drift_alerts`` applies the
thresholds from config. A dimension needs ``min_samples`` scores on each side before it may
alert: a handful of rollouts moves every metric, and a gate on a training pipeline must not
trip on noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from earmark.config import Settings
from earmark.drift import metrics, sql
from earmark.drift.metrics import BinnedMetrics
from earmark.drift.sql import ResolvedSelection, Selection

SEVERITIES = ("warning", "alert")
TOO_FEW = "too few samples"
ALERT_KINDS = ("psi", "ks", "mean_shift", "hacking_duration", "hacking_length", "judge_agreement", "trap")


@dataclass(frozen=True)
class Thresholds:
    psi_warn: float = metrics.PSI_WARN
    psi_alert: float = metrics.PSI_ALERT
    pvalue: float = 0.01
    ks_min_statistic: float = 0.1
    mean_shift: float = 0.5
    min_samples: int = 100
    hist_bins: int = 20
    psi_bins: int = 10
    hacking_corr: float = 0.4
    hacking_corr_rise: float = 0.2
    judge_agreement_min: float = 0.6
    trap_verifiable_rise: float = 0.02
    trap_human_fall: float = 0.05
    window_hours: int = 24
    bootstrap: int = 200

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(**{f: getattr(s, f"drift_{f}") for f in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Alert:
    kind: str
    severity: str  # "alert" gates a pipeline; "warning" is shown only
    metric: str
    value: float
    threshold: float
    message: str
    reward_model_id: int | None = None
    dimension: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DimensionDrift:
    reward_model_id: int
    reward_model: str
    reward_model_version: str
    kind: str
    dimension: str
    baseline: dict[str, Any] | None  # n, mean, sd, min, max, corr_duration, corr_length, quantiles
    candidate: dict[str, Any] | None
    binned: BinnedMetrics | None = None
    psi: float | None = None
    psi_p: float | None = None
    psi_band: str = "n/a"
    ks_d: float | None = None
    ks_p: float | None = None
    js: float | None = None
    wasserstein: float | None = None
    mean_shift_sd: float | None = None
    mean_shift_p: float | None = None
    # bootstrap 95% intervals (multinomial resampling of the binned scores, seeded)
    psi_ci: tuple[float, float] | None = None
    mean_diff: float | None = None  # candidate mean - baseline mean
    mean_diff_ci: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        return f"{self.reward_model}@{self.reward_model_version}/{self.dimension}"

    @property
    def comparable(self) -> bool:
        return self.baseline is not None and self.candidate is not None

    def row(self) -> dict[str, Any]:
        """A flat record for tables, JSON and DataFrames."""
        b, c = self.baseline or {}, self.candidate or {}
        return {
            "reward_model": self.reward_model,
            "rm_version": self.reward_model_version,
            "kind": self.kind,
            "dimension": self.dimension,
            "n_baseline": b.get("n", 0),
            "n_candidate": c.get("n", 0),
            "mean_baseline": b.get("mean"),
            "mean_candidate": c.get("mean"),
            "mean_shift_sd": self.mean_shift_sd,
            "mean_shift_p": self.mean_shift_p,
            "psi": self.psi,
            "psi_p": self.psi_p,
            "psi_band": self.psi_band,
            "psi_ci_low": self.psi_ci[0] if self.psi_ci else None,
            "psi_ci_high": self.psi_ci[1] if self.psi_ci else None,
            "mean_diff": self.mean_diff,
            "mean_diff_ci_low": self.mean_diff_ci[0] if self.mean_diff_ci else None,
            "mean_diff_ci_high": self.mean_diff_ci[1] if self.mean_diff_ci else None,
            "ks_d": self.ks_d,
            "ks_p": self.ks_p,
            "js": self.js,
            "wasserstein": self.wasserstein,
            "corr_duration_baseline": b.get("corr_duration"),
            "corr_duration_candidate": c.get("corr_duration"),
            "corr_length_baseline": b.get("corr_length"),
            "corr_length_candidate": c.get("corr_length"),
        }


@dataclass
class DriftSummary:
    selection: Selection
    thresholds: Thresholds
    dimensions: list[DimensionDrift]
    alerts: list[Alert]
    generated_at: datetime
    prompt_set: dict[str, Any] = field(default_factory=dict)  # mode, baseline, candidate, shared (prompt counts)

    @property
    def prompt_set_note(self) -> str:
        """Which prompts the comparison is on, in words (every report prints it)."""
        p, sel = self.prompt_set, self.selection
        if not p:
            return ""
        if p["mode"] == "shared":
            return (
                f"compared on the {p['shared']} prompt(s) both v{sel.baseline} and v{sel.candidate} were scored on "
                f"(v{sel.baseline} has {p['baseline']}, v{sel.candidate} has {p['candidate']})"
            )
        warn = (
            ""
            if p["baseline"] == p["candidate"] == p["shared"]
            else "; the sets differ, so part of any shift is the prompts"
        )
        return f"compared on all prompts: v{sel.baseline} on {p['baseline']}, v{sel.candidate} on {p['candidate']}, {p['shared']} shared{warn}"

    @property
    def fired(self) -> list[Alert]:
        return [a for a in self.alerts if a.severity == "alert"]


def _finite(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def summarize(session: Session, selection: Selection, th: Thresholds) -> DriftSummary:
    """Every reward dimension of the selection compared in the database: two aggregate passes,
    no score rows leave PostgreSQL."""
    sql.prepare(session)
    rs: ResolvedSelection = sql.resolve(session, selection)
    moments = sql.moments(session, rs)
    bounds = {
        k: (min(s["min"] for s in v.values()), max(s["max"] for s in v.values()))
        for k, v in moments.items()
        if len(v) == 2
    }
    fine = sql.fine_histograms(session, rs, bounds, th.hist_bins * metrics.FINE_PER_DISPLAY_BIN)
    models = sql.reward_models(session, sorted({k[0] for k in moments}))
    dims = []
    for key in sorted(moments, key=lambda k: (models[k[0]]["name"], models[k[0]]["version"], k[1])):
        rm = models[key[0]]
        sides = moments[key]
        d = DimensionDrift(key[0], rm["name"], rm["version"], rm["kind"], key[1], sides.get(False), sides.get(True))
        if key in fine:
            _compare(d, fine[key], th)
        dims.append(d)
    alerts = drift_alerts(dims, th) + correlation_alerts(dims, th)
    return DriftSummary(selection, th, dims, alerts, datetime.now(UTC), sql.prompt_sets(session, rs))


def _compare(d: DimensionDrift, h: sql.FineHistogram, th: Thresholds) -> None:
    b, c = d.baseline, d.candidate
    assert b is not None and c is not None
    m = metrics.from_fine(h.count, h.total, h.min, h.max, h.lo, h.hi, th.hist_bins, th.psi_bins)
    d.binned = m
    b["quantiles"], c["quantiles"] = list(m.quantiles[0]), list(m.quantiles[1])
    d.psi, d.js, d.ks_d, d.wasserstein = m.psi, m.js, m.ks_d, m.wasserstein
    # a band is a claim about the population: only where each side has enough scores to support it
    enough = min(b["n"], c["n"]) >= th.min_samples
    d.psi_band = metrics.psi_band(d.psi, th.psi_warn, th.psi_alert) if enough else TOO_FEW
    d.mean_diff = c["mean"] - b["mean"]
    if th.bootstrap > 0:
        d.psi_ci, d.mean_diff_ci = metrics.bootstrap_intervals(h.count, h.total, m.psi_counts, th.bootstrap)
    d.ks_p = metrics.ks_pvalue(d.ks_d, b["n"], c["n"])
    d.psi_p = metrics.psi_pvalue(d.psi, b["n"], c["n"], int((m.psi_counts.sum(axis=0) > 0).sum()))
    d.mean_shift_sd = metrics.mean_shift_sd(b["mean"], b["sd"], c["mean"])
    d.mean_shift_p = metrics.welch_pvalue(b["mean"], b["sd"], b["n"], c["mean"], c["sd"], c["n"])


def drift_alerts(dims: list[DimensionDrift], th: Thresholds) -> list[Alert]:
    out: list[Alert] = []
    for d in dims:
        if not d.comparable:
            continue
        assert d.baseline is not None and d.candidate is not None
        if min(d.baseline["n"], d.candidate["n"]) < th.min_samples:
            continue
        common = {"reward_model_id": d.reward_model_id, "dimension": d.dimension}
        # Every alert needs an effect size over its threshold *and* a significant test, so a
        # gate neither trips on sampling noise in small samples nor on trivia in huge ones.
        significant_psi = d.psi_p is not None and d.psi_p < th.pvalue
        if d.psi is not None and d.psi >= th.psi_alert and significant_psi:
            out.append(
                Alert(
                    "psi",
                    "alert",
                    "psi",
                    round(d.psi, 4),
                    th.psi_alert,
                    f"{d.label}: PSI {d.psi:.3f} >= {th.psi_alert} (significant shift, p={d.psi_p:.2g})",
                    details={"p_value": d.psi_p},
                    **common,
                )
            )
        elif d.psi is not None and d.psi >= th.psi_warn and significant_psi:
            out.append(
                Alert(
                    "psi",
                    "warning",
                    "psi",
                    round(d.psi, 4),
                    th.psi_warn,
                    f"{d.label}: PSI {d.psi:.3f} in the moderate band",
                    details={"p_value": d.psi_p},
                    **common,
                )
            )
        if d.ks_p is not None and d.ks_d is not None and d.ks_p < th.pvalue and d.ks_d >= th.ks_min_statistic:
            out.append(
                Alert(
                    "ks",
                    "alert",
                    "ks_d",
                    round(d.ks_d, 4),
                    th.ks_min_statistic,
                    f"{d.label}: KS D {d.ks_d:.3f} (p={d.ks_p:.2g}) over {th.ks_min_statistic} at p < {th.pvalue}",
                    details={"p_value": d.ks_p},
                    **common,
                )
            )
        if (
            d.mean_shift_sd is not None
            and abs(d.mean_shift_sd) >= th.mean_shift
            and d.mean_shift_p is not None
            and d.mean_shift_p < th.pvalue
        ):
            direction = "up" if d.mean_shift_sd > 0 else "down"
            out.append(
                Alert(
                    "mean_shift",
                    "alert",
                    "mean_shift_sd",
                    round(d.mean_shift_sd, 4),
                    th.mean_shift,
                    f"{d.label}: mean moved {direction} {abs(d.mean_shift_sd):.2f} baseline SDs "
                    f"({d.baseline['mean']:.3f} -> {d.candidate['mean']:.3f}, p={d.mean_shift_p:.2g})",
                    details={"p_value": d.mean_shift_p},
                    **common,
                )
            )
    return out


# (signal name, summary column, words for the message)
CORRELATES = (("duration", "corr_duration", "response duration"), ("length", "corr_length", "response length"))


def correlation_alerts(dims: Sequence[DimensionDrift], th: Thresholds) -> list[Alert]:
    """Reward hacking by length: a reward that now follows response length or duration (see
    ``earmark.drift.hacking`` for the reasoning)."""
    out = []
    for d in dims:
        c = d.candidate
        if c is None or c["n"] < th.min_samples:
            continue
        for name, col, words in CORRELATES:
            r = c.get(col)
            if r is None or abs(r) < th.hacking_corr:
                continue
            base = (d.baseline or {}).get(col)
            rise = abs(r) - abs(base or 0.0)
            if rise < th.hacking_corr_rise:
                continue
            was = f"{base:+.2f}" if base is not None else "n/a"
            out.append(
                Alert(
                    f"hacking_{name}",
                    "alert",
                    col,
                    round(r, 4),
                    th.hacking_corr,
                    f"{d.label}: reward follows {words} (r={r:+.2f}, baseline {was}); "
                    "check for a length/verbosity exploit",
                    reward_model_id=d.reward_model_id,
                    dimension=d.dimension,
                    details={"baseline": base, "rise": round(rise, 4)},
                )
            )
    return out


def summary_json(s: DriftSummary) -> dict[str, Any]:
    """What `earmark drift report` writes beside the HTML (machine-readable, for pipeline gates)."""
    return {
        "policy": s.selection.policy,
        "baseline": s.selection.baseline,
        "candidate": s.selection.candidate,
        "generated_at": s.generated_at.isoformat(),
        "thresholds": asdict(s.thresholds),
        "dimensions": [
            {k: _finite(v) if isinstance(v, float) else v for k, v in d.row().items()} for d in s.dimensions
        ],
        "alerts": [a.to_dict() for a in s.alerts],
    }


@dataclass
class DriftReport:
    """Everything `earmark drift report` and the dashboard show for one comparison."""

    summary: DriftSummary
    windows: list[dict[str, Any]]
    judge_agreement: list[dict[str, Any]]
    overoptimization: list[dict[str, Any]]
    trap: Any  # earmark.drift.trap.TrapResult
    leaderboard: Any  # earmark.drift.leaderboard.Leaderboard | None (no style control)
    leaderboard_style: Any  # ... with duration, loudness and speaking rate as covariates
    raters: Any  # earmark.drift.raters.RaterDrift
    alerts: list[Alert]
    report_id: Any = None  # uuid of the stored alerts
    alert_ids: list[int] = field(default_factory=list)

    @property
    def fired(self) -> list[Alert]:
        return [a for a in self.alerts if a.severity == "alert"]
