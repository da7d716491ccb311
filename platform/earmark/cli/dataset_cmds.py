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

    filters = SnapshotFilters(
        campaign_ids=campaign,
        policy_ids=policy_id or None,
        rounds=round or None,
        label_sources=source,
        labels=LabelConfig(min_agreement=min_agreement, ai_fill=ai_fill, ai_reward_model_ids=ai_reward_model),
    )
    ds = connect().datasets.build(name, filters)
    m = ds.manifest
    console.print(
        f"dataset {ds.name} v{ds.version}: {ds.row_count} rows, sha256 {ds.content_sha256[:16]}..., "
        f"labels {m['label_counts']}"
    )


@dataset_app.command("show")
@handle_errors
def show(
    name: str = typer.Argument(...), version: int = typer.Option(None, help="Version; latest by default.")
) -> None:
    """Print a snapshot's manifest."""
    ds = connect().datasets.get(name, version)
    console.print_json(json.dumps({"name": ds.name, "version": ds.version, "filters": ds.filters, **ds.manifest}))


@dataset_app.command("export")
@handle_errors
def export(
    name: str = typer.Argument(
        None, help="Snapshot name. best_of_n: optional; its prompts and policy versions select the candidates."
    ),
    format: str = typer.Option(
        "trl", "--format", "-f", help="trl, openrlhf, verl, nemo_rl, chat, best_of_n or earmark (interchange JSONL)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (.parquet or .jsonl)."),
    version: int = typer.Option(None, help="Version; latest by default."),
    content: str = typer.Option(
        None,
        "--content",
        help="Message content: 'text' (strings, for text trainers; "
        "the default) or 'parts' (the chat form with audio parts by sha256; "
        "the default for chat).",
    ),
    regime: str = typer.Option(
        None, "--regime", help="best_of_n: rank by this regime preset's composition, over that regime's prompts only."
    ),
    composition: Path = typer.Option(
        None,
        "--composition",
        help="best_of_n: a RewardComposition JSON file (name + weights per regime); the presets' weights by default.",
    ),
    policy_id: list[int] = typer.Option([], "--policy-id", help="best_of_n: only rollouts of these policy ids."),
    round: list[int] = typer.Option([], "--round", help="best_of_n: only rollouts of these rounds."),
    split: list[str] = typer.Option([], "--split", help="best_of_n: only prompts of these splits."),
    audio: str = typer.Option(
        None,
        "--audio",
        help="Carry the audio: sha (sha256 columns; `earmark dataset fetch-audio` fetches them), files (copies in "
        "OUT_audio/ beside the export, paths relative to it) or embed (HF datasets Audio feature; .parquet only).",
    ),
) -> None:
    """Write a snapshot in a trainer's format, or best-of-N SFT data ranked by a reward composition.

    Numeric columns: confidence (label confidence), weight (the pair weight earmark's DPO trains with),
    margin (openrlhf: the implied reward gap). See the exports module and docs/interchange.md."""
    from earmark import exports

    formats = (*exports.FORMATS, "best_of_n", "earmark")
    if audio is not None and audio not in exports.AUDIO_MODES:
        raise typer.BadParameter(f"--audio {audio!r} is unknown; use one of {', '.join(exports.AUDIO_MODES)}")
    if audio == "embed" and out.suffix != ".parquet":
        raise typer.BadParameter("--audio embed writes audio bytes: use a .parquet output (or --audio files)")
    if format not in formats:
        raise typer.BadParameter(f"format {format!r} is unknown; use one of {', '.join(formats)}")
    if content is not None and content not in exports.CONTENT_MODES:
        raise typer.BadParameter(f"--content {content!r} is unknown; use one of {', '.join(exports.CONTENT_MODES)}")
    suffix = out.suffix.lstrip(".")
    if suffix not in ("parquet", "jsonl"):
        raise typer.BadParameter(f"{out}: use a .parquet or .jsonl file name")
    if format != "best_of_n" and (regime or composition or policy_id or round or split):
        raise typer.BadParameter(
            "--regime, --composition, --policy-id, --round and --split select best_of_n "
            "candidates; a snapshot export takes the snapshot as built"
        )
    if format != "best_of_n" and name is None:
        raise typer.BadParameter(f"--format {format} exports a snapshot: give its NAME (see `earmark dataset build`)")
    em = connect()
    files_dir = out.parent / f"{out.stem}_audio"
    rows: list = []
    if format == "earmark":
        from earmark.services.interchange import SnapshotExport

        if suffix != "jsonl":
            raise typer.BadParameter("--format earmark writes JSON Lines: use a .jsonl output")
        ds = em.datasets.get(name, version)
        rows = em.datasets.load(ds).to_pylist()
        to_path = None
        if audio == "files":

            def to_path(sha: str) -> str:
                files_dir.mkdir(parents=True, exist_ok=True)
                dest = files_dir / f"{sha}.wav"
                if not dest.exists():
                    dest.write_bytes(em.blobs.read(sha))
                return f"{files_dir.name}/{sha}.wav"

        lines = SnapshotExport(em.ctx).lines(rows, f"earmark:{ds.name}-v{ds.version}", to_path)
        out.write_bytes(exports.write(lines, "jsonl"))
        console.print(f"{len(lines)} earmark interchange lines ({len(rows)} judgments) -> {out}")
        return
    if format == "best_of_n":
        records, note = _best_of_n(em, name, version, regime, composition, policy_id, round, split, content or "text")
    else:
        ds = em.datasets.get(name, version)
        rows = em.datasets.load(ds).to_pylist()
        records, note = exports.convert(rows, format, content), ""
    audio_cols = None
    if audio is not None:
        shas = exports.audio_shas(records, rows, format)
        records = exports.attach_audio(records, shas, audio, read=em.blobs.read, files_dir=files_dir)
        audio_cols = sorted({c for x in shas for c in x}) if audio == "embed" else None
        note += f"; audio as {audio}" + (f" in {files_dir}" if audio == "files" else "")
    out.write_bytes(exports.write(records, suffix, audio_columns=audio_cols))
    console.print(f"{len(records)} {format} records -> {out}{note}")


def _best_of_n(em, name, version, regime, composition, policy_ids, rounds, splits, content):  # noqa: ANN001, ANN202
    """Candidates from the store, composed at this edge (reward_models), the top one per prompt kept."""
    from earmark import exports
    from earmark.errors import InvalidInput
    from earmark.regimes import PRESETS
    from reward_models.composition import RewardComposition

    if regime is not None and regime not in PRESETS:
        raise InvalidInput(f"regime preset {regime!r} is unknown; use one of {', '.join(PRESETS)}")
    if composition is not None:
        if not composition.is_file():
            raise InvalidInput(f"--composition {composition} does not exist; write a RewardComposition JSON file")
        try:
            comp = RewardComposition.model_validate_json(composition.read_text())
        except ValueError as exc:
            raise InvalidInput(f"--composition {composition} is not a valid RewardComposition: {exc}") from None
    else:
        comp = RewardComposition()  # the presets' weights
    prompt_ids = None
    if name is not None:
        snap = em.datasets.load(em.datasets.get(name, version)).to_pylist()
        prompt_ids = sorted({r["prompt_id"] for r in snap})
        policy_ids = policy_ids or sorted({r["policy_id"] for r in snap})
    cands = em.datasets.candidates(
        prompt_ids=prompt_ids,
        policy_ids=policy_ids or None,
        rounds=rounds or None,
        regimes=[regime] if regime else None,
        splits=splits or None,
    )
    ranked, unscored = [], 0
    for c in cands:
        try:
            r = comp.compose(c["regime"], c["scores"])
        except ValueError:  # no score on any weighted dimension of its regime: nothing to rank it by
            unscored += 1
            continue
        ranked.append(
            {
                **c,
                "score": r.total,
                "verifiable": r.verifiable,
                "preference": r.preference,
                "composition_version": r.composition_version,
            }
        )
    if not ranked:
        raise InvalidInput(
            f"none of {len(cands)} candidate rollouts has a score on a dimension the composition "
            f"weights{' for ' + regime if regime else ''}; run `earmark score"
            f"{' --regime ' + regime if regime else ''}` first"
        )
    note = f" (top of {len(ranked)} scored rollouts by {comp.version}; {unscored} without usable scores skipped)"
    return exports.best_of_n(ranked, content=content), note


@dataset_app.command("export-pairs")
@handle_errors
def export_pairs(
    out: Path = typer.Option(..., "--out", "-o", help="Output .parquet file."),
    source: str = typer.Option(None, "--source", help="Only judgments of this source (e.g. arena:battles.jsonl)."),
) -> None:
    """Imported (external) judgments as preference pairs in Parquet: prompt_messages, chosen, rejected, audio by
    sha256 (`earmark dataset fetch-audio` fetches them), source, annotator, preference, tie, both_bad, confidence."""
    from earmark.errors import InvalidInput
    from earmark.services.interchange import export_pairs_parquet

    if out.suffix != ".parquet":
        raise InvalidInput(f"{out}: export-pairs writes Parquet; use a .parquet file name")
    n = export_pairs_parquet(connect().ctx, out, source=source)
    console.print(f"{n} preference pairs -> {out}")


@dataset_app.command("fetch-audio")
@handle_errors
def fetch_audio(
    export_file: Path = typer.Argument(..., help="An export (.parquet or .jsonl) with sha256 audio references."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for the clips; default EXPORT_audio/ beside it."),
) -> None:
    """Fetch the blobs an export references by sha256 (columns *_audio / *_audio_sha256 and audio parts)."""
    import re

    from earmark.errors import InvalidInput

    if not export_file.is_file():
        raise InvalidInput(f"{export_file} does not exist; give an export written by `earmark dataset export`")
    if export_file.suffix == ".parquet":
        import pyarrow.parquet as pq

        text = json.dumps(pq.read_table(export_file).to_pylist(), default=str)
    else:
        text = export_file.read_text()
    shas = sorted(set(re.findall(r'"(?:audio_sha256|[a-z_]*audio[a-z_0-9]*)": ?"([0-9a-f]{64})"', text)))
    dest = out_dir or export_file.parent / f"{export_file.stem}_audio"
    dest.mkdir(parents=True, exist_ok=True)
    em = connect()
    fetched = 0
    for sha in shas:
        target = dest / f"{sha}.wav"
        if not target.exists():
            target.write_bytes(em.blobs.read(sha))  # verified against its sha256 on read
            fetched += 1
    console.print(f"{len(shas)} audio references, {fetched} fetched -> {dest}")


@dataset_app.command("lineage")
@handle_errors
def lineage(
    name: str = typer.Argument(...),
    row_id: str = typer.Argument(..., help="row_id of an exported row."),
    version: int = typer.Option(None),
) -> None:
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
