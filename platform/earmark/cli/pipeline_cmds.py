"""Commands that run Ray pipelines: rollouts (and, as they land, scoring and training)."""

from __future__ import annotations

import typer
from rich.markup import escape

from earmark.cli.common import connect, console, handle_errors


@handle_errors
def rollout(
    policy: str = typer.Option(..., "--policy", help="Registered policy name (see `earmark policies list`)."),
    version: int = typer.Option(None, "--version", help="Policy version; latest when omitted."),
    prompts: str = typer.Option("train", "--prompts", help="Prompt split (train/heldout/test) or a comma list of ids."),
    regime: str = typer.Option(None, help="Only prompts of this regime."),
    samples: int = typer.Option(4, "--samples", "-k", min=1, max=64, help="Samples per prompt (K)."),
    actors: int = typer.Option(1, "--actors", "-n", min=1, max=256, help="Policy actors in the Ray pool."),
    round: int = typer.Option(0, "--round", min=0, help="Loop round the rollouts belong to."),
    batch_size: int = typer.Option(8, min=1, max=1024, help="Trajectories per actor call."),
    gpus_per_actor: float = typer.Option(0.0, min=0.0, help="GPUs per actor."),
    temperature: float = typer.Option(0.9, min=0.0, max=5.0, help="Sampling temperature."),
    max_new_tokens: int = typer.Option(64, min=1, max=4096, help="Token budget per response."),
    seed: int = typer.Option(0, help="Job seed."),
) -> None:
    """Generate K rollouts per prompt on a Ray actor pool; re-running fills only what is missing."""
    from pipelines.rollout_job import RolloutJobConfig, run_rollout_job

    splits = {"train", "heldout", "test"}
    cfg = RolloutJobConfig(
        policy=policy,
        policy_version=version,
        regime=regime,
        split=prompts if prompts in splits else None,
        prompt_ids=None if prompts in splits else [p.strip() for p in prompts.split(",") if p.strip()],
        samples=samples,
        actors=actors,
        round=round,
        batch_size=batch_size,
        gpus_per_actor=gpus_per_actor,
        temperature=temperature,
        max_new_tokens=max_new_tokens,
        seed=seed,
    )
    em = connect()
    res = run_rollout_job(em, cfg)
    console.print(
        f"rollouts: {res.planned} generated, {res.skipped_existing} already stored; "
        f"{res.samples_per_s:.2f} samples/s on {res.actors} actor(s) across {len(res.nodes)} node(s)"
    )
    if res.planned == 0:
        console.print(escape("nothing to do: every (prompt, sample) of this policy and round is stored"))
