"""`earmark drift report`: compare a candidate policy version with a baseline, gate a pipeline on it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from earmark.cli.common import connect, console, handle_errors

drift_app = typer.Typer(help="Reward drift, reward hacking and the verifiable-reward trap.", no_args_is_help=True)


def _ci(ci: tuple[float, float] | None, spec: str = ".3f") -> str:
    return escape(f"[{ci[0]:{spec}}, {ci[1]:{spec}}]") if ci else ""


def _f(x: float | None, spec: str = ".3f") -> str:
    return "–" if x is None else format(x, spec)


@drift_app.command("report")
@handle_errors
def report(
    baseline: int = typer.Option(..., "--baseline", help="Baseline policy version (e.g. the reference, v0)."),
    candidate: int = typer.Option(..., "--candidate", help="Candidate policy version to check."),
    policy: str = typer.Option(None, "--policy", help="Policy name (needed when several have both versions)."),
    out: Path = typer.Option(Path("drift-report"), "--out", help="Directory for report.html, PNGs and summary.json."),
    regime: list[str] = typer.Option([], "--regime", help="Only prompts of this regime (repeatable)."),
    dimension: list[str] = typer.Option([], "--dimension", help="Only this reward dimension (repeatable)."),
    store: bool = typer.Option(True, "--store/--no-store", help="Store the alerts in drift_alerts."),
    bootstrap: int = typer.Option(None, "--bootstrap", min=0, help="Leaderboard bootstrap resamples (config default)."),
    prompts: str = typer.Option(
        "shared", "--prompts", help="shared: only prompts both versions were scored on (default); all: every prompt."
    ),
) -> None:
    """Write a self-contained HTML report with PNG images, print the summary; exit 1 when an alert fires."""
    from earmark.drift.html import write_report
    from earmark.services.drift import DriftService

    em = connect()
    svc = getattr(em, "drift", None) or DriftService(em.ctx)
    with console.status(f"comparing v{candidate} with v{baseline} in the database"):
        rep = svc.report(
            baseline,
            candidate,
            policy=policy,
            regimes=regime,
            dimensions=dimension,
            store=store,
            bootstrap=bootstrap,
            prompts=prompts,
        )
        paths = write_report(rep, out)
    sel = rep.summary.selection
    table = Table(
        "reward model / dimension",
        "n base",
        "n cand",
        "mean base",
        "mean cand",
        "shift SD",
        "mean diff [95% CI]",
        "PSI [95% CI]",
        "band",
        "KS D",
        "KS p",
        "JS",
        "W1",
        "r(len)",
        title=f"{sel.policy}: v{sel.candidate} vs v{sel.baseline}",
    )
    colors = {"significant": "red", "moderate": "yellow", "stable": "green"}
    for d in rep.summary.dimensions:
        r = d.row()
        band = f"[{colors.get(d.psi_band, 'white')}]{d.psi_band}[/]"
        table.add_row(
            escape(d.label),
            str(r["n_baseline"]),
            str(r["n_candidate"]),
            _f(r["mean_baseline"]),
            _f(r["mean_candidate"]),
            _f(r["mean_shift_sd"], "+.2f"),
            f"{_f(r['mean_diff'], '+.3f')} {_ci(d.mean_diff_ci, '+.3f')}",
            f"{_f(r['psi'])} {_ci(d.psi_ci)}",
            band,
            _f(r["ks_d"]),
            _f(r["ks_p"], ".2g"),
            _f(r["js"]),
            _f(r["wasserstein"], ".4f"),
            _f(r["corr_length_candidate"], "+.2f"),
        )
    console.print(table)
    console.print(escape(rep.summary.prompt_set_note))
    for a in sorted(rep.alerts, key=lambda a: a.severity != "alert"):
        color = "red" if a.severity == "alert" else "yellow"
        console.print(f"[{color}]{a.severity}[/] {a.kind}: {escape(a.message)}", highlight=False)
    if rep.trap.rounds:
        console.print(f"trap: {escape(rep.trap.message)}")
    console.print(f"report: {paths['html']} ({len(paths) - 2} PNG images, summary.json)")
    if rep.fired:
        console.print(f"[red]{len(rep.fired)} alert(s) fired[/]: exit 1")
        raise typer.Exit(1)
    console.print("[green]no alert fired[/]")


@drift_app.command("alerts")
@handle_errors
def alerts(
    policy: str = typer.Option(None, "--policy", help="Only this policy name."),
    open_only: bool = typer.Option(False, "--open", help="Only alerts nobody has acknowledged."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000),
) -> None:
    """List stored drift alerts, newest first."""
    from earmark.services.drift import DriftService

    em = connect()
    svc = getattr(em, "drift", None) or DriftService(em.ctx)
    rows = svc.alerts(policy=policy, limit=limit, include_acknowledged=not open_only)
    table = Table("id", "when", "severity", "kind", "policy", "versions", "message", "ack")
    for a in rows:
        table.add_row(
            str(a.id),
            f"{a.created_at:%Y-%m-%d %H:%M}",
            a.severity,
            a.kind,
            escape(a.policy),
            f"v{a.baseline_version}->v{a.candidate_version}",
            escape(a.message),
            "yes" if a.acknowledged_at else "",
        )
    console.print(table if rows else "no drift alerts stored")
