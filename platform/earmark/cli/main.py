"""`earmark` CLI entry point: sub-apps per area, each command with --help."""

from __future__ import annotations

import os

# Before anything loads torch/libgomp: idle OpenMP threads sleep instead of spinning (on shared
# cores spinning made a torch step 40x slower; see ./run).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer

from earmark.cli.campaign_cmds import campaign_app
from earmark.cli.catalog_cmds import personas_app, policies_app, prompts_app
from earmark.cli.common import console, handle_errors, settings
from earmark.cli.dataset_cmds import dataset_app
from earmark.cli.drift_cmds import drift_app
from earmark.cli.duplex_cmds import duplex_app
from earmark.cli.interchange_cmds import import_file, schema
from earmark.cli.pipeline_cmds import rollout
from earmark.cli.regime_cmds import regime_app
from earmark.cli.rm_cmds import rm_app, score
from earmark.cli.store_cmds import db_app, services_app
from earmark.cli.train_cmds import train_app
from earmark.cli.ui_cmds import ui, users_app

app = typer.Typer(
    help="earmark: RLHF reward and preference data for audio-language models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(db_app, name="db")
app.add_typer(services_app, name="services")
app.add_typer(personas_app, name="personas")
app.add_typer(prompts_app, name="prompts")
app.add_typer(policies_app, name="policies")
app.add_typer(users_app, name="users")
app.add_typer(campaign_app, name="campaign")
app.add_typer(dataset_app, name="dataset")
app.add_typer(train_app, name="train")
app.add_typer(drift_app, name="drift")
app.add_typer(duplex_app, name="duplex")
app.add_typer(regime_app, name="regime")
app.command("rollout")(rollout)
app.command("score")(score)
app.add_typer(rm_app, name="rm")
app.command("ui")(ui)
app.command("import")(import_file)
app.command("schema")(schema)


@app.command()
@handle_errors
def init(
    seed: bool = typer.Option(True, help="Import the bundled personas and prompts."),
) -> None:
    """Create EARMARK_HOME, start and migrate the store, and import the bundled starter data."""
    import earmark

    cfg = settings()
    cfg.home_dir.mkdir(parents=True, exist_ok=True)
    em = earmark.connect(cfg, upgrade=True)  # init is the one command that always migrates
    console.print(f"store ready (home {cfg.home_dir}, blobs {cfg.resolved_blob_url()})")
    if seed:
        from pipelines import starter

        with console.status("importing starter personas and prompts (user audio by eSpeak NG)"):
            report = starter.seed(em)
        console.print(f"starter data: {report}")


@app.command()
@handle_errors
def demo(
    rounds: int = typer.Option(2, min=1, max=5, help="Rounds of the loop."),
    wait_for_humans: bool = typer.Option(
        False, "--wait-for-humans", help="Pause after each campaign opens until people judge its quota in the app."
    ),
    human_timeout: float = typer.Option(1800, min=10, help="Seconds to wait for people before AI labels fill in."),
    actors: int = typer.Option(2, min=1, max=64, help="Ray actors for rollouts and scoring."),
    seed: int = typer.Option(
        0,
        help="Seed of every draw (rollouts, campaigns, simulated raters, DPO): on a fresh EARMARK_HOME one seed "
        "gives one result.",
    ),
    policy: str = typer.Option(
        "offline",
        "--policy",
        help="offline: the bundled 2.2M-parameter speech policy; smollm2-piper: SmolLM2-135M-Instruct writes "
        "the reply and its prosody controls, a Piper neural voice speaks it, LoRA DPO trains it (fewer prompts; "
        "needs the voice extra, GPL-3.0-or-later).",
    ),
) -> None:
    """Run the whole loop on embedded defaults: rollouts, scores, annotation, labels, DPO, drift."""
    from pipelines.demo import run_demo

    run_demo(
        settings(),
        rounds=rounds,
        wait_for_humans=wait_for_humans,
        human_timeout_s=human_timeout,
        actors=actors,
        seed=seed,
        demo_policy=policy,
    )


if __name__ == "__main__":
    app()
