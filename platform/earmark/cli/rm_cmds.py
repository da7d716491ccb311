"""`earmark score`, `earmark rm eval`, `earmark rm serve`: reward models on stored rollouts."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from earmark.cli.common import connect, console, err_console, handle_errors

rm_app = typer.Typer(help="Reward models: evaluation against humans, the reward endpoint.", no_args_is_help=True)


@handle_errors
def score(
    scorers: str = typer.Option(
        None,
        "--scorers",
        show_default="prosody",
        help="Comma list: prosody, wer, answer_match, tool_calls, judge, latency, ...",
    ),
    regime: str = typer.Option(
        None,
        "--regime",
        help="Regime preset (asr, tts, realtime, duplex, reasoning): its scorers and configs, "
        "on that regime's rollouts only. With --scorers, those scorers instead.",
    ),
    policy: str = typer.Option(None, "--policy", help="Only rollouts of this policy name (latest version)."),
    version: int = typer.Option(None, "--version", help="Policy version."),
    actors: int = typer.Option(1, "--actors", min=1, max=256, help="Scoring actors on Ray."),
) -> None:
    """Score every rollout that lacks a score from these scorer versions (new versions add rows)."""
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    specs = _scorer_specs(scorers, regime)
    em = connect()
    pid = em.catalog.policy(policy, version).id if policy else None
    if regime:
        from earmark.regimes import get_preset

        keys = get_preset(regime).required_sampling
        if lacking := em.scores.lacking_sampling(keys, regimes=[regime], policy_id=pid):
            err_console.print(
                f"[yellow]warning:[/] {lacking} {regime} rollout(s) lack decoding settings "
                f"{list(keys)} in their sampling column; their rewards cannot be compared across "
                "decoding set-ups (record them at rollout time)"
            )
    res = run_scoring_job(
        em,
        ScoringJobConfig(
            scorers=[ScorerSpec(**s) for s in specs], policy_id=pid, regimes=[regime] if regime else None, actors=actors
        ),
    )
    console.print(f"scored {res.rollouts} rollouts in {res.seconds:.1f}s: {res.per_scorer or 'nothing missing'}")


def _scorer_specs(scorers: str | None, regime: str | None) -> list[dict]:
    """--scorers alone: as before (default prosody). --regime: the preset's scorers, refused with a
    clear message when one is not registered. Both: the named scorers, with the preset's config."""
    names = [s.strip() for s in (scorers or "").split(",") if s.strip()]
    if not regime:
        return [{"name": n} for n in names or ["prosody"]]
    from earmark.errors import InvalidInput
    from earmark.regimes import check_scorers, get_preset
    from reward_models.base import list_scorers

    try:
        preset = get_preset(regime)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not names:
        problems = check_scorers(preset, list_scorers(), include_optional=False)
        if problems:
            raise InvalidInput("; ".join(problems))
        return preset.scorer_specs()
    configs = {s.name: dict(s.config) for s in preset.scorers}
    return [{"name": n, "config": configs.get(n, {})} for n in names]


@rm_app.command("eval")
@handle_errors
def rm_eval(
    campaign: list[int] = typer.Option(
        [], "--campaign", "-c", help="Campaigns whose judgments to use (all by default)."
    ),
    plot: Path = typer.Option(Path("rm-calibration.png"), help="Where to write the reliability plot."),
) -> None:
    """Pairwise accuracy, Kendall tau and calibration of every reward model vs human judgments."""
    from reward_models.evaluation import evaluate_against_humans, reliability_plot

    em = connect()
    pairs = em.scores.human_pairs(campaign or None)
    if not pairs:
        console.print("no human pairwise judgments yet; run a campaign first")
        raise typer.Exit(1)
    scores = em.scores.by_dimension(sorted({x for p in pairs for x in (p["a"], p["b"])}))
    judgments = [{**p, "dimension": d} for d in scores for p in pairs]
    rows = evaluate_against_humans(scores, judgments)
    table = Table("reward model / dimension", "rater pool", "pairs", "accuracy", "kendall tau", "ECE")
    for r in rows:
        table.add_row(
            r["dimension"],
            r["rater_pool"],
            str(r.get("n", "")),
            f"{r.get('pairwise_accuracy', float('nan')):.3f}",
            f"{r.get('kendall_tau', float('nan')):.3f}",
            f"{r.get('ece', float('nan')):.3f}",
        )
    console.print(table)
    reliability_plot(rows, plot)
    console.print(f"reliability plot: {plot}")


@rm_app.command("serve")
@handle_errors
def rm_serve(
    scorers: str = typer.Option(
        "answer_match,tool_calls", "--scorers", help="Comma list of scorers to compose (verifiable by default)."
    ),
    regime: str = typer.Option("reasoning", help="Composition weights of this regime (a request may pick another)."),
    host: str = typer.Option("127.0.0.1", help="Bind address; beyond loopback only strong tokens are accepted."),
    port: int = typer.Option(5000, min=1, max=65535),
    workers: int = typer.Option(1, "--workers", min=1, max=256, help="uvicorn worker processes."),
    ssl_certfile: Path = typer.Option(None, "--ssl-certfile", help="TLS certificate (PEM); with --ssl-keyfile."),
    ssl_keyfile: Path = typer.Option(None, "--ssl-keyfile", help="TLS private key (PEM)."),
    durability: str = typer.Option(
        "server",
        "--durability",
        help="Answer once the serving events are committed in the database ('server'; a database "
        "host crash can lose the last ~0.6 s of them) or also flushed to its disk ('disk').",
    ),
) -> None:
    """Serve the reward composition for OpenRLHF (--remote_rm_url .../get_reward) and veRL.

    Clients authenticate with a token from `earmark rm token NAME` (HTTP Basic password or Bearer);
    EARMARK_REWARD_TOKEN adds one more, named "env". See docs/reward_service.md."""
    from earmark.errors import InvalidInput
    from pipelines.reward_service.app import ServiceConfig
    from pipelines.reward_service.recorder import durability_problem
    from pipelines.reward_service.server import conninfo_of, run

    if problem := durability_problem(durability):
        raise InvalidInput(f"--{problem}")
    em = connect()
    config = ServiceConfig(
        conninfo=conninfo_of(em),
        scorers=[{"name": s.strip()} for s in scorers.split(",") if s.strip()],
        regime=regime,
        durability=durability,  # type: ignore[arg-type]
    )
    em.close()
    scheme = "https" if ssl_certfile else "http"
    console.print(
        f"reward service on {scheme}://{host}:{port}/get_reward ({workers} worker(s), durability {durability})"
    )
    try:
        run(
            config,
            host=host,
            port=port,
            workers=workers,
            ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
            ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        )
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


@rm_app.command("token")
@handle_errors
def rm_token(
    name: str = typer.Argument(None, help="Client or team the token is for (shown in every serving event)."),
    replace: bool = typer.Option(False, "--replace", help="Rotate: a new token for an existing name."),
    revoke: bool = typer.Option(False, "--revoke", help="Revoke the named token."),
    list_: bool = typer.Option(False, "--list", help="List token names (never the tokens)."),
) -> None:
    """Mint a named reward-service token; it is printed once and only its hash is stored."""
    from earmark.errors import InvalidInput
    from pipelines.reward_service.auth import create_token, list_tokens, revoke_token

    em = connect()
    if list_:
        for t in list_tokens(em):
            console.print(
                f"{t['name']}\t{t['created_at']:%Y-%m-%d %H:%M}\t{'revoked' if t['revoked_at'] else 'active'}"
            )
        return
    if not name:
        raise InvalidInput("name the token: earmark rm token NAME (or --list)")
    if revoke:
        revoke_token(em, name)
        console.print(f"revoked {name}")
        return
    token = create_token(em, name, replace=replace)
    err_console.print(f"token for {name!r} (shown once; only its hash is stored):")
    print(token)
