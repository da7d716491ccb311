"""Reward drift, reward hacking, the verifiable-reward trap, the policy leaderboard and rater drift.

Every read needs ``dashboard.view`` (reviewers, admins, engineers). The aggregates run in
PostgreSQL (``earmark.drift``); this service picks the selection, applies the thresholds from
config and stores the alerts a report raises, so the dashboard and a training pipeline's gate
see the same decisions.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from earmark.drift import hacking, leaderboard, raters, sql, trap
from earmark.drift.report import Alert, DriftReport, DriftSummary, Thresholds, summarize
from earmark.errors import InvalidInput, NotFound
from earmark.security import action
from earmark.services.context import Service
from earmark.store.models import DriftAlert


class DriftService(Service):
    @property
    def thresholds(self) -> Thresholds:
        return Thresholds.from_settings(self.ctx.settings)

    # ---- what can be compared -------------------------------------------------------------------
    @action("dashboard.view")
    def catalog(self) -> dict[str, Any]:
        """Policy names with their versions, regimes, reward models and dimensions (for filters)."""
        self.ctx.require("dashboard.view")
        return self.ctx.tx(sql.catalog)

    @action("dashboard.view")
    def resolve_policy(self, baseline: int, candidate: int, policy: str | None = None) -> str:
        """The policy name to compare; without one, the only name registered at both versions."""
        self.ctx.require("dashboard.view")
        if policy:
            return policy
        names = [n for n, vs in self.catalog()["policies"].items() if baseline in vs and candidate in vs]
        if len(names) == 1:
            return str(names[0])
        if not names:
            raise NotFound(
                f"no policy is registered at both v{baseline} and v{candidate}; "
                "check the versions with `earmark policies list`"
            )
        raise InvalidInput(f"policies {sorted(names)} all have v{baseline} and v{candidate}; name one with --policy")

    # ---- distributions --------------------------------------------------------------------------
    @action("dashboard.view")
    def compare(
        self,
        baseline: int,
        candidate: int,
        *,
        policy: str | None = None,
        regimes: Sequence[str] = (),
        dimensions: Sequence[str] = (),
        reward_models: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        prompts: str = "shared",
    ) -> DriftSummary:
        """Candidate vs baseline on every reward dimension: PSI, KS, JS, Wasserstein, mean shift,
        length/duration correlations and the alerts they raise (not stored; see ``report``)."""
        name = self.resolve_policy(baseline, candidate, policy)
        sel = sql.Selection(
            name, baseline, candidate, tuple(regimes), tuple(dimensions), tuple(reward_models), since, until, prompts
        )
        th = self.thresholds
        return self.ctx.tx(lambda s: summarize(s, sel, th))

    @action("dashboard.view")
    def windows(
        self,
        policy: str,
        *,
        hours: int | None = None,
        regimes: Sequence[str] = (),
        dimensions: Sequence[str] = (),
        reward_models: Sequence[str] = (),
        versions: Sequence[int] = (),
    ) -> list[dict[str, Any]]:
        """Score distribution per reward dimension, policy version and time window."""
        self.ctx.require("dashboard.view")
        h = hours or self.thresholds.window_hours

        def read(s: Session) -> list[dict[str, Any]]:
            sql.prepare(s)
            rows = sql.windows(
                s,
                policy,
                hours=h,
                regimes=regimes,
                dimensions=dimensions,
                reward_models=reward_models,
                versions=versions,
            )
            models = sql.reward_models(s, sorted({r["rm_id"] for r in rows}))
            for r in rows:
                m = models[r["rm_id"]]
                r["label"] = f"{m['name']}@{m['version']}/{r['dimension']}"
            return rows

        return self.ctx.tx(read)

    # ---- hacking ------------------------------------------------------------------------------
    @action("dashboard.view")
    def judge_agreement(
        self, *, policy: str | None = None, regimes: Sequence[str] = (), hours: int | None = None
    ) -> list[dict[str, Any]]:
        self.ctx.require("dashboard.view")
        h = hours or self.thresholds.window_hours
        return self.ctx.tx(lambda s: hacking.judge_agreement(s, hours=h, policy=policy, regimes=regimes))

    @action("dashboard.view")
    def overoptimization(
        self,
        policy: str,
        *,
        regimes: Sequence[str] = (),
        anchor: int | None = None,
        lb: leaderboard.Leaderboard | None = None,
    ) -> list[dict[str, Any]]:
        """Per version: KL from the reference, proxy reward means, human win rate vs ``anchor``
        (from the style-free Bradley-Terry fit; None without cross-version judgments)."""
        self.ctx.require("dashboard.view")
        rows = self.ctx.tx(lambda s: hacking.overoptimization(s, policy, regimes=regimes))
        if lb is None:
            try:
                lb = self.leaderboard(policy=policy, regimes=regimes, style_control=False, bootstrap=0, anchor=anchor)
            except InvalidInput:
                lb = None
        wins = {}
        if lb is not None:
            anchor_i = lb.versions.index(lb.anchor)
            for i, v in enumerate(lb.versions):
                wins[v] = 1 / (1 + math.exp(-(lb.strength[i] - lb.strength[anchor_i])))
        for r in rows:
            r["human_win_rate"] = wins.get(f"v{r['version']}")
        return rows

    # ---- verifiable-reward trap ---------------------------------------------------------------
    @action("dashboard.view")
    def trap(self, policy: str, *, regimes: Sequence[str] = ()) -> trap.TrapResult:
        self.ctx.require("dashboard.view")
        th = self.thresholds
        return self.ctx.tx(
            lambda s: trap.trap(
                s, policy, regimes=regimes, verifiable_rise=th.trap_verifiable_rise, human_fall=th.trap_human_fall
            )
        )

    # ---- leaderboard --------------------------------------------------------------------------
    @action("dashboard.view")
    def leaderboard(
        self,
        *,
        policy: str | None = None,
        style_control: bool = True,
        bootstrap: int | None = None,
        anchor: int | None = None,
        campaign_ids: Sequence[int] = (),
        regimes: Sequence[str] = (),
        seed: int = 0,
    ) -> leaderboard.Leaderboard:
        """Bradley-Terry ratings per policy version from human A/B judgments, with bootstrap 95%
        intervals; ``style_control`` adds duration, loudness and speaking rate as covariates."""
        self.ctx.require("dashboard.view")
        rows = self.ctx.tx(
            lambda s: leaderboard.load_pairs(s, policy=policy, campaign_ids=campaign_ids, regimes=regimes)
        )
        if len(rows.versions) < 2:
            raise InvalidInput(
                "no pairwise human judgments between two policy versions yet; run an A/B "
                "campaign over rollouts of both versions (CampaignCreate(policy_ids=[...]))"
            )
        label = None if anchor is None else (f"v{anchor}" if policy else None)
        if label is not None and label not in rows.versions:
            label = None
        n_boot = self.thresholds.bootstrap if bootstrap is None else bootstrap
        return leaderboard.fit(rows, anchor=label, style_control=style_control, bootstrap=n_boot, seed=seed)

    # ---- raters -------------------------------------------------------------------------------
    @action("dashboard.view")
    def rater_drift(self, *, campaign_ids: Sequence[int] = (), hours: int | None = None) -> raters.RaterDrift:
        self.ctx.require("dashboard.view")
        h = hours or self.thresholds.window_hours
        return self.ctx.tx(lambda s: raters.rater_drift(s, hours=h, campaign_ids=campaign_ids))

    # ---- the whole report -----------------------------------------------------------------------
    @action("dashboard.view")
    def report(
        self,
        baseline: int,
        candidate: int,
        *,
        policy: str | None = None,
        regimes: Sequence[str] = (),
        dimensions: Sequence[str] = (),
        reward_models: Sequence[str] = (),
        store: bool = True,
        bootstrap: int | None = None,
        hours: int | None = None,
        prompts: str = "shared",
    ) -> DriftReport:
        """Everything the dashboard and `earmark drift report` show, with all alerts; stored in
        ``drift_alerts`` (one report id) unless ``store`` is False."""
        name = self.resolve_policy(baseline, candidate, policy)
        th = self.thresholds
        summary = self.compare(
            baseline,
            candidate,
            policy=name,
            regimes=regimes,
            dimensions=dimensions,
            reward_models=reward_models,
            prompts=prompts,
        )
        windows = self.windows(name, hours=hours, regimes=regimes, dimensions=dimensions, reward_models=reward_models)
        agreement = self.judge_agreement(policy=name, regimes=regimes, hours=hours)
        trap_result = self.trap(name, regimes=regimes)
        boards: dict[str, leaderboard.Leaderboard] = {}
        for style in (False, True):
            try:
                boards["style" if style else "raw"] = self.leaderboard(
                    policy=name, style_control=style, bootstrap=bootstrap, anchor=baseline, regimes=regimes
                )
            except (InvalidInput, ValueError):
                pass
        overopt = self.overoptimization(name, regimes=regimes, anchor=baseline, lb=boards.get("raw"))
        rater = self.rater_drift(hours=hours)
        alerts = list(summary.alerts) + hacking.agreement_alerts(agreement, th)
        if trap_result.flagged:
            last = ([s for s in trap_result.steps if s["flagged"]] or [trap_result.overall])[-1]
            alerts.append(
                Alert(
                    "trap",
                    "alert",
                    "human_delta",
                    round(last["human_delta"], 4),
                    th.trap_human_fall,
                    trap_result.message,
                    details={k: v for k, v in last.items() if k != "flagged"},
                )
            )
        rep = DriftReport(
            summary, windows, agreement, overopt, trap_result, boards.get("raw"), boards.get("style"), rater, alerts
        )
        if store and alerts:
            rep.report_id, rep.alert_ids = self.store_alerts(summary.selection, alerts)
        return rep

    @action("dashboard.view")
    def store_alerts(self, selection: sql.Selection, alerts: Sequence[Alert]) -> tuple[uuid.UUID, list[int]]:
        self.ctx.require("dashboard.view")
        report_id = uuid.uuid4()

        def write(s: Session) -> list[int]:
            rows = [
                DriftAlert(
                    report_id=report_id,
                    kind=a.kind,
                    severity=a.severity,
                    policy=selection.policy,
                    baseline_version=selection.baseline,
                    candidate_version=selection.candidate,
                    reward_model_id=a.reward_model_id,
                    dimension=a.dimension,
                    metric=a.metric,
                    value=_finite(a.value),
                    threshold=_finite(a.threshold),
                    message=a.message,
                    details=_jsonable(a.details),
                    created_by=self.ctx.principal.user_id,
                )
                for a in alerts
            ]
            s.add_all(rows)
            s.flush()
            self.ctx.audit(
                s,
                "drift.alerts",
                "drift_report",
                report_id,
                alerts=len(rows),
                policy=selection.policy,
                baseline=selection.baseline,
                candidate=selection.candidate,
            )
            return [r.id for r in rows]

        return report_id, self.ctx.tx(write)

    @action("dashboard.view")
    def alerts(
        self, *, policy: str | None = None, limit: int = 200, include_acknowledged: bool = True
    ) -> list[DriftAlert]:
        """Stored alerts, newest first."""
        self.ctx.require("dashboard.view")
        q = select(DriftAlert).order_by(DriftAlert.created_at.desc(), DriftAlert.id.desc()).limit(limit)
        if policy:
            q = q.where(DriftAlert.policy == policy)
        if not include_acknowledged:
            q = q.where(DriftAlert.acknowledged_at.is_(None))
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("dashboard.view")
    def acknowledge(self, alert_id: int, note: str = "") -> None:
        """A reviewer has looked at the alert; it stays stored and leaves the open list."""
        self.ctx.require("dashboard.view")

        def write(s: Session) -> None:
            res = s.execute(
                update(DriftAlert)
                .where(DriftAlert.id == alert_id)
                .values(acknowledged_by=self.ctx.principal.user_id, acknowledged_at=datetime.now(UTC))
            )
            if res.rowcount == 0:  # type: ignore[attr-defined]  # a CursorResult at runtime
                raise NotFound(f"drift alert {alert_id} does not exist; list alerts with DriftService.alerts()")
            self.ctx.audit(s, "drift.acknowledge", "drift_alert", alert_id, note=note)

        self.ctx.tx(write)


def _finite(x: float) -> float:
    return float(x) if x is not None and math.isfinite(x) else 0.0


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, datetime):
            v = v.isoformat()
        out[k] = v
    return out
