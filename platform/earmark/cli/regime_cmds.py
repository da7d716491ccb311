"""`earmark regime list|show`: the task-regime presets (scorers, reward composition, annotation
protocol, campaign defaults, export formats). Reads earmark.regimes only; no store needed."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from earmark.cli.common import console, handle_errors

regime_app = typer.Typer(
    help="Task-regime presets: scorers, reward composition, annotation protocol, exports.", no_args_is_help=True
)


def _registry() -> dict[str, dict]:
    """The scorer registry (name -> kind, dimensions), loading the built-in scorer modules."""
    from reward_models.base import list_scorers

    return list_scorers()


def _weights(w: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in w.items()) or "-"


@regime_app.command("list")
@handle_errors
def list_presets() -> None:
    """One line per regime preset."""
    from earmark.regimes import PRESETS

    table = Table("regime", "scorers", "verifiable (weights)", "preference (weights)", "mix", "protocol", "exports")
    for p in PRESETS.values():
        scorers = ", ".join(s.name + (" (optional)" if s.optional else "") for s in p.scorers)
        table.add_row(
            p.name,
            scorers,
            _weights(p.composition.verifiable),
            _weights(p.composition.preference),
            f"{p.composition.mix:g}",
            p.campaign.protocol.value,
            ", ".join(p.export_formats),
        )
    console.print(table)


@regime_app.command("show")
@handle_errors
def show(
    name: str = typer.Argument(..., help="Regime preset: asr, tts, realtime, duplex or reasoning."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON (for scripts)."),
) -> None:
    """Everything a preset sets, and whether each of its scorers is registered here."""
    from earmark.errors import InvalidInput
    from earmark.regimes import check_scorers, describe, get_preset

    try:
        preset = get_preset(name)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    registry = _registry()
    problems = check_scorers(preset, registry)
    data = {
        **describe(preset),
        "scorer_status": {s.name: ("registered" if s.name in registry else "not registered") for s in preset.scorers},
        "problems": problems,
    }
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(f"[bold]{preset.name}[/]: {preset.summary}")
    st = Table("scorer", "dimensions", "config", "needs", "status")
    for s in preset.scorers:
        status = "registered" if s.name in registry else f"[yellow]not registered[/] ({s.provided_by})"
        st.add_row(
            s.name + (" (optional)" if s.optional else ""),
            ", ".join(s.dimensions),
            escape(json.dumps(s.config)) if s.config else "-",
            ", ".join(s.requires) or "-",
            status,
        )
    console.print(st)
    c = preset.composition
    # escape(): "[a 1, b 0.5]" would otherwise be read as rich markup and vanish
    console.print(
        escape(
            f"reward composition: verifiable [{_weights(c.verifiable)}], preference "
            f"[{_weights(c.preference)}], total = {c.mix:g} * verifiable + {1 - c.mix:g} * preference"
        )
    )
    camp = preset.campaign
    console.print(
        f"annotation: {camp.protocol.value}, ratings {', '.join(camp.dimensions)}, overlap {camp.overlap}, "
        f"gold ratio {camp.gold_ratio:g}"
    )
    console.print(escape(f"human signals: {'; '.join(preset.human_signals)}"))
    console.print(escape(f"instructions: {camp.instructions}"))
    console.print(f"exports: {', '.join(preset.export_formats)}")
    if preset.required_sampling:
        console.print(f"decoding settings each rollout must record: {', '.join(preset.required_sampling)}")
    for p in problems:
        console.print(f"[yellow]warning:[/] {escape(p)}")
