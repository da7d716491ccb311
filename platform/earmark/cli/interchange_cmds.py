"""`earmark import FILE` and `earmark schema [FORMAT]`: bring in the data users already have."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from earmark.cli.common import connect, console, handle_errors


@handle_errors
def import_file(
    file: Path = typer.Argument(..., help="A .jsonl, .json, .parquet or .arrow file."),
    format: str = typer.Option(
        None, "--format", "-f", help="earmark, openai, hf, arena, label-studio or argilla; detected by default."
    ),
    on_conflict: str = typer.Option(
        "error",
        "--on-conflict",
        help="Rows that exist with different content: error (default; nothing is imported), skip (keep the "
        "stored ones) or update (replace them). Identical rows are always left as they are.",
    ),
    audio_root: Path = typer.Option(
        None, "--audio-root", help="Audio paths must resolve under this folder (default: the file's folder)."
    ),
    allow_urls: bool = typer.Option(False, "--allow-urls", help="Fetch audio given as http(s) URLs."),
) -> None:
    """Import prompts, personas, responses and judgments all-or-nothing, with their audio.

    Judgments keep their source and annotator (table external_judgments) and never count as earmark
    raters' work; outside models become external policies. See docs/interchange.md."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    em = connect()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} records"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"importing {file.name}", total=None)
        summary = em.interchange.import_file(
            file,
            fmt=format,
            on_conflict=on_conflict,
            audio_root=audio_root,
            allow_urls=allow_urls,
            progress=lambda n: bar.update(task, completed=n),
        )
    console.print(f"{file}: {summary.line()}")


@handle_errors
def schema(
    format: str = typer.Argument(
        None, help="earmark (all kinds), or one kind: prompt, persona, response, judgment. Default: all."
    ),
) -> None:
    """Print the JSON Schema of the earmark interchange formats (and list the foreign formats)."""
    from earmark.errors import InvalidInput
    from earmark.interchange import ADAPTERS
    from earmark.interchange.records import schemas

    all_schemas = schemas()
    if format in (None, "earmark"):
        out: dict[str, Any] = {"earmark": all_schemas}
        if format is None:
            out["foreign_formats"] = {
                a.name: {"description": a.description, "expects": a.expected}
                for a in ADAPTERS.values()
                if a.name != "earmark"
            }
    elif format in all_schemas:
        out = all_schemas[format]
    elif format in ADAPTERS:
        a = ADAPTERS[format]
        out = {
            "format": a.name,
            "description": a.description,
            "expects": a.expected,
            "translates_to": "earmark prompt/response/judgment lines (`earmark schema earmark`)",
        }
    else:
        raise InvalidInput(
            f"{format!r} is neither an earmark kind ({', '.join(all_schemas)}) nor a format ({', '.join(ADAPTERS)})"
        )
    typer.echo(json.dumps(out, indent=2))
