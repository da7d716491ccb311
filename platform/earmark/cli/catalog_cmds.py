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


@personas_app.command("import")
@handle_errors
def personas_import(file: Path = typer.Argument(..., help="JSONL, one persona per line.")) -> None:
    """Import personas; existing names are kept unchanged."""
    rep = connect().catalog.import_personas(_existing(file))
    console.print(f"personas: {rep.added} added, {rep.skipped} already present")


@prompts_app.command("import")
@handle_errors
def prompts_import(
    file: Path = typer.Argument(..., help="JSONL, one prompt per line (audio as path or base64)."),
) -> None:
    """Import prompts; audio parts are validated and stored as blobs first."""
    rep = connect().catalog.import_prompts(_existing(file))
    console.print(f"prompts: {rep.added} added, {rep.skipped} already present")


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
    kind: str = typer.Option("offline", help="offline, hf, openai or duplex."),
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
