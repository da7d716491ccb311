"""`earmark duplex generate|import|export|metrics|render`: full-duplex scenarios and sessions."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from earmark.cli.common import connect, console, handle_errors
from earmark.errors import InvalidInput

duplex_app = typer.Typer(
    help="Full-duplex timelines: synthetic scenarios, JSONL import/export, turn-taking metrics.", no_args_is_help=True
)


def _fmt(x: float | None, pattern: str = "{:.2f}") -> str:
    return "-" if x is None else pattern.format(x)


@duplex_app.command("generate")
@handle_errors
def generate(
    n: int = typer.Option(12, min=1, max=10_000, help="Number of scenarios (every kind in turn)."),
    seed: int = typer.Option(0, help="Suite seed; the same seed gives the same scenarios."),
    out: Path = typer.Option(..., help="JSONL to write, one duplex session per line."),
    chunk_ms: int = typer.Option(160, min=10, max=2000, help="Chunk clock in milliseconds."),
    kinds: str = typer.Option(
        "", help="Comma-separated subset of normal,pause,interrupt,backchannel,tool_call,no_tool_call (default: all)."
    ),
    fmt: str = typer.Option(
        "session",
        "--format",
        help="'session' (for `earmark duplex import`) or 'prompt' (for `earmark prompts import`).",
    ),
) -> None:
    """Synthesise duplex scenarios (eSpeak NG user speech, events at known times) for `earmark duplex import`."""
    from pipelines.duplex.scenarios import SCENARIO_KINDS, scenario_suite

    if fmt not in ("session", "prompt"):
        raise InvalidInput(f"--format {fmt!r}: use 'session' (duplex import lines) or 'prompt' (prompt records)")
    chosen = tuple(k.strip() for k in kinds.split(",") if k.strip()) or SCENARIO_KINDS
    try:
        suite = scenario_suite(n, seed, chunk_ms, kinds=chosen)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    with out.open("w") as f:
        for sc in suite:
            record = sc.session_record() if fmt == "session" else sc.prompt_record()
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    counts: dict[str, int] = {}
    for sc in suite:
        counts[sc.kind] = counts.get(sc.kind, 0) + 1
    console.print(f"wrote {len(suite)} scenarios to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@duplex_app.command("import")
@handle_errors
def import_(file: Path = typer.Argument(..., help="JSONL of duplex sessions (timeline + audio).")) -> None:
    """Import sessions: scenarios become duplex prompts, assistant sides rollouts of external-<source>."""
    if not file.exists():
        raise typer.BadParameter(f"{file} does not exist; give the path of a JSONL file")
    rep = connect().timelines.import_jsonl(file)
    console.print(
        f"{rep.lines} lines: {rep.prompts_added} scenario prompts and {rep.rollouts_added} rollouts added"
        + (f" (policies {', '.join(rep.policies)})" if rep.policies else "")
    )


def _policy_id(em, policy: str | None, version: int | None) -> int | None:  # noqa: ANN001
    return None if policy is None else em.catalog.policy(policy, version).id


@duplex_app.command("export")
@handle_errors
def export(
    out: Path = typer.Option(..., help="JSONL to write."),
    audio: str = typer.Option("sha", help="'sha' (audio stays in the blob store) or 'base64' (self-contained)."),
    policy: str | None = typer.Option(None, help="Only rollouts of this policy name."),
    version: int | None = typer.Option(None, help="Policy version (default: the latest)."),
) -> None:
    """Export duplex scenarios and rollout timelines in the import format."""
    em = connect()
    lines = em.timelines.export_jsonl(out, audio=audio, policy_id=_policy_id(em, policy, version))  # type: ignore[arg-type]
    console.print(f"wrote {len(lines)} lines to {out}")


@duplex_app.command("render")
@handle_errors
def render(
    rollout_id: int = typer.Argument(..., help="Rollout with a duplex timeline."),
    out: Path = typer.Option(..., help="Stereo WAV to write (user left, assistant right)."),
) -> None:
    """Render a rollout's timeline to a stereo WAV for listening."""
    out.write_bytes(connect().timelines.render_rollout(rollout_id))
    console.print(f"wrote {out}")


@duplex_app.command("metrics")
@handle_errors
def metrics(
    policy: str = typer.Option(..., help="Policy name whose duplex rollouts to evaluate."),
    version: int | None = typer.Option(None, help="Policy version (default: the latest)."),
    respond_window: float = typer.Option(2.0, min=0.0, help="Seconds within which a response counts."),
    stop_window: float = typer.Option(1.0, min=0.0, help="Seconds within which a stop counts."),
) -> None:
    """Turn-taking accuracy and delay per scenario type, and tool-call metrics, for a policy's rollouts."""
    from earmark.domain.duplex import Timeline
    from reward_models.duplex import ToolCase, evaluate_events, reference_events, summarize, tool_call_metrics

    em = connect()
    rows = em.timelines.evaluation_rows(_policy_id(em, policy, version))  # type: ignore[arg-type]
    if not rows:
        raise InvalidInput(
            f"policy {policy} has no duplex rollouts with a timeline; run duplex rollouts or "
            "`earmark duplex import` first"
        )
    outcomes, cases = [], []
    for r in rows:
        tl = Timeline.model_validate(r["timeline"])
        outcomes += evaluate_events(
            tl,
            reference_events(r["reference"]) or tl.events,
            respond_window_s=respond_window,
            stop_window_s=stop_window,
        )
        if "tool_calls" in r["reference"]:
            cases.append(
                ToolCase(
                    expected=r["reference"]["tool_calls"] or [],
                    predicted=r["tool_calls"] or [c.model_dump() for c in tl.tool_calls()],
                )
            )
    table = Table(
        "scenario type",
        "events",
        "accuracy",
        "mean delay (s)",
        "median delay (s)",
        title=f"turn-taking: {policy} ({len(rows)} rollouts)",
    )
    for name, s in sorted(summarize(outcomes).items(), key=lambda kv: (kv[0] == "all", kv[0])):
        table.add_row(name, str(s.n), _fmt(s.accuracy, "{:.3f}"), _fmt(s.mean_delay_s), _fmt(s.median_delay_s))
    console.print(table)
    if cases:
        m = tool_call_metrics(cases)
        tt = Table("metric", "value", "over", title=f"tool calls ({m.n_cases} cases)")
        tt.add_row("trigger precision", _fmt(m.trigger_precision, "{:.3f}"), f"{m.tp + m.fp} cases with calls")
        tt.add_row("trigger recall", _fmt(m.trigger_recall, "{:.3f}"), f"{m.tp + m.fn} cases expecting calls")
        tt.add_row("tool-name accuracy", _fmt(m.name_accuracy, "{:.3f}"), f"{m.name_slots} call slots")
        tt.add_row("argument accuracy", _fmt(m.argument_accuracy, "{:.3f}"), f"{m.argument_pairs} name-matched calls")
        tt.add_row("order accuracy", _fmt(m.order_accuracy, "{:.3f}"), f"{m.order_cases} multi-action cases")
        console.print(tt)
