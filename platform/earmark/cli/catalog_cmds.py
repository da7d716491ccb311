"""`earmark personas|prompts|policies ...`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from earmark.cli.common import connect, console, handle_errors

personas_app = typer.Typer(help="Persona cards (name, description, style, prosody targets).", no_args_is_help=True)
prompts_app = typer.Typer(help="Prompts in the chat-message form, with audio.", no_args_is_help=True)
policies_app = typer.Typer(help="The policy registry (name, version, parent).", no_args_is_help=True)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise typer.BadParameter(f"{path} does not exist; give the path of a JSONL file")
    return path


_ON_CONFLICT_HELP = "Changed content of an existing name/id: error (default), skip (keep stored) or update."
_AUDIO_ROOT_HELP = "Audio paths must resolve under this folder (default: the file's folder)."


def _import(file: Path, kind: str, on_conflict: str, audio_root: Path | None) -> None:
    """Through the interchange import (all-or-nothing with audio, strict JSON, limits, --on-conflict);
    `earmark schema {kind}` prints the line format."""
    s = connect().interchange.import_file(
        _existing(file), fmt="earmark", on_conflict=on_conflict, audio_root=audio_root, only_kinds=(kind,)
    )
    present = s.unchanged.get(kind, 0) + s.skipped.get(kind, 0)
    updated = f", {s.updated[kind]} updated" if s.updated.get(kind) else ""
    console.print(f"{kind}s: {s.added.get(kind, 0)} added, {present} already present{updated}")


@personas_app.command("import")
@handle_errors
def personas_import(
    file: Path = typer.Argument(..., help="JSONL, one persona per line (`earmark schema persona`)."),
    on_conflict: str = typer.Option("error", "--on-conflict", help=_ON_CONFLICT_HELP),
) -> None:
    """Import personas; identical ones already present are left as they are."""
    _import(file, "persona", on_conflict, None)


@prompts_app.command("import")
@handle_errors
def prompts_import(
    file: Path = typer.Argument(
        ..., help="JSONL, one prompt per line (`earmark schema prompt`; audio as path/base64)."
    ),
    on_conflict: str = typer.Option("error", "--on-conflict", help=_ON_CONFLICT_HELP),
    audio_root: Path = typer.Option(None, "--audio-root", help=_AUDIO_ROOT_HELP),
) -> None:
    """Import prompts all-or-nothing: audio is checked and staged, and published with the rows."""
    _import(file, "prompt", on_conflict, audio_root)


@policies_app.command("list")
@handle_errors
def policies_list() -> None:
    """List registered policy versions."""
    table = Table("id", "name", "version", "kind", "parent", "uri")
    for p in connect().catalog.policies():
        table.add_row(str(p.id), p.name, str(p.version), p.kind, str(p.parent_id or ""), p.uri)
    console.print(table)


@policies_app.command("register")
@handle_errors
def policies_register(
    name: str = typer.Argument(..., help="Policy name, e.g. offline-speech."),
    uri: str = typer.Option(
        None,
        "--uri",
        help="Where the checkpoint lives (file://, s3://, hf://, openai://...). Omitted: the bundled "
        "offline speech policy, materialised under EARMARK_HOME/models.",
    ),
    kind: str = typer.Option("offline", help="offline, hf, hf-piper (an HF chat LM + Piper voice), openai or duplex."),
    version: int = typer.Option(None, "--version", min=0, help="Version number; next free one when omitted."),
    parent: int = typer.Option(None, "--parent", help="Policy id this version was trained from."),
) -> None:
    """Register a policy version (the policy `earmark rollout --policy NAME` samples from)."""
    if uri is None:
        from pipelines.policy.offline.build import ensure_checkpoint

        with console.status("materialising the bundled offline speech policy"):
            uri = ensure_checkpoint(progress=False).resolve().as_uri()
        kind = "offline"
    p = connect().catalog.register_policy(name, uri, kind=kind, version=version, parent_id=parent)
    console.print(f"policy {p.name} v{p.version} registered (id {p.id}, {p.kind}, {p.uri})")
