"""`earmark dataset build|show|export|lineage`: frozen preference snapshots and trainer formats."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from earmark.cli.common import connect, console, handle_errors

dataset_app = typer.Typer(help="Preference dataset snapshots (Parquet + manifest) and exports.", no_args_is_help=True)


@dataset_app.command("build")
@handle_errors
def build(
    name: str = typer.Argument(..., help="Dataset name; each new content becomes a new version."),
    campaign: list[int] = typer.Option([], "--campaign", "-c", help="Campaign id(s) whose human labels to use."),
    policy_id: list[int] = typer.Option([], "--policy-id", help="Only pairs of rollouts of these policy ids."),
    round: list[int] = typer.Option([], "--round", help="Only rollouts of these rounds."),
    source: list[str] = typer.Option(["human", "adjudicated", "ai"], "--source", help="Label sources to keep."),
    ai_fill: bool = typer.Option(False, help="Label pairs no human judged from reward-model scores (marked 'ai')."),
    ai_reward_model: list[int] = typer.Option([], "--ai-reward-model", help="Reward model id(s) for AI labels."),
    min_agreement: float = typer.Option(0.6, min=0.5, max=1.0, help="Weighted agreement needed for a human label."),
) -> None:
    """Freeze a snapshot: labels -> Parquet in the blob store -> manifest with content hash."""
    from earmark.services.datasets import SnapshotFilters
    from earmark.services.labels import LabelConfig

    filters = SnapshotFilters(campaign_ids=campaign, policy_ids=policy_id or None, rounds=round or None,
                              label_sources=source,
                              labels=LabelConfig(min_agreement=min_agreement, ai_fill=ai_fill,
                                                 ai_reward_model_ids=ai_reward_model))
    ds = connect().datasets.build(name, filters)
    m = ds.manifest
    console.print(f"dataset {ds.name} v{ds.version}: {ds.row_count} rows, sha256 {ds.content_sha256[:16]}..., "
                  f"labels {m['label_counts']}")


@dataset_app.command("show")
@handle_errors
def show(name: str = typer.Argument(...), version: int = typer.Option(None, help="Version; latest by default.")) -> None:
    """Print a snapshot's manifest."""
    ds = connect().datasets.get(name, version)
    console.print_json(json.dumps({"name": ds.name, "version": ds.version, "filters": ds.filters, **ds.manifest}))


@dataset_app.command("export")
@handle_errors
def export(
    name: str = typer.Argument(...),
    format: str = typer.Option("trl", "--format", "-f", help="trl, openrlhf, verl or nemo_rl."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.parquet or .jsonl)."),
    version: int = typer.Option(None, help="Version; latest by default."),
) -> None:
    """Write a snapshot in a trainer's format."""
    from earmark import exports

    if format not in exports.CONVERTERS:
        raise typer.BadParameter(f"format {format!r} is unknown; use one of {', '.join(exports.FORMATS)}")
    suffix = out.suffix.lstrip(".")
    if suffix not in ("parquet", "jsonl"):
        raise typer.BadParameter(f"{out}: use a .parquet or .jsonl file name")
    em = connect()
    ds = em.datasets.get(name, version)
    records = exports.CONVERTERS[format](em.datasets.load(ds).to_pylist())
    out.write_bytes(exports.write(records, suffix))
    console.print(f"{len(records)} {format} records -> {out}")


@dataset_app.command("lineage")
@handle_errors
def lineage(name: str = typer.Argument(...), row_id: str = typer.Argument(..., help="row_id of an exported row."),
            version: int = typer.Option(None)) -> None:
    """Trace a row back to its rollouts, policy versions, judgments and raters."""
    em = connect()
    info = em.datasets.lineage(em.datasets.get(name, version), row_id)
    table = Table("rollout", "policy", "version", "round")
    for r in info["rollouts"]:
        table.add_row(str(r["id"]), r["name"], str(r["version"]), str(r["round"]))
    console.print(table)
    jt = Table("judgment", "rater", "preference")
    for j in info["judgments"]:
        jt.add_row(str(j["id"]), j["username"], f"{j['preference']:+.2f}")
    console.print(jt)
