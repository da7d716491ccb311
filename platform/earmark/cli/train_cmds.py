"""`earmark train dpo|ppo|runs|show`: policy training on snapshots (DPO/IPO) and online (PPO/GRPO).

torch and ray load inside the commands only, so `earmark --help` stays fast.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any, NoReturn

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from earmark.cli.common import connect, console, err_console, handle_errors

train_app = typer.Typer(
    help="Train policies: DPO/IPO on a snapshot, PPO/GRPO online; runs are recorded.", no_args_is_help=True
)


def _overrides(config: Path | None, **flags: Any) -> dict[str, Any]:
    """A JSON config file (optional) overlaid with the flags that were given."""
    base: dict[str, Any] = {}
    if config is not None:
        try:
            base = json.loads(config.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise typer.BadParameter(f"{config}: cannot read a JSON config ({exc}); pass a JSON object file") from None
    return {**base, **{k: v for k, v in flags.items() if v is not None}}


def _fail(exc: Exception) -> NoReturn:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        msg = f"{'.'.join(map(str, err['loc'])) or 'config'}: {err['msg']}"
    else:
        msg = str(exc)
    err_console.print(f"[red]error:[/] {escape(msg)}")
    raise typer.Exit(2)


def _summary_line(res: Any) -> str:
    p = res.policy
    return f"registered {p.name} v{p.version} (policy id {p.id}, training run {res.run_id}) at {res.path}"


# Flags of `train dpo` come from DPOConfig's fields (name, type, description): one definition.
# Extra short or historical names for a few of them:
DPO_FLAG_ALIASES = {"loss_type": ["--loss"], "num_workers": ["--workers", "-n"]}
DPO_FIXED = {"dataset", "dataset_version", "policy", "policy_version", "config", "resume"}


def _config_params(model_cls: Any, aliases: dict[str, list[str]]) -> list[inspect.Parameter]:
    """One ``typer.Option`` per pydantic field (default None: only given flags override the config)."""
    import types
    import typing

    params = []
    for name, field in model_cls.model_fields.items():
        ann = field.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
            ann = args[0]
        choices = typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()
        if choices:
            ann = str
        elif typing.get_origin(ann) is list:
            ann = list[str]
        flag = "--" + name.replace("_", "-")
        decls = [f"{flag}/--no-{flag[2:]}"] if ann is bool else [flag]
        decls += aliases.get(name, [])
        default = field.default if field.default is not None and not callable(field.default) else None
        help_ = (field.description or "").rstrip(".") + (f" [{'|'.join(choices)}]" if choices else "")
        help_ += f" (default {default})" if default is not None else ""
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=typer.Option(None, *decls, help=help_, show_default=False),
                annotation=ann,
            )
        )
    return params


def dpo(
    dataset: str = typer.Argument(None, help="Snapshot name (see `earmark dataset build`); optional with --resume."),
    dataset_version: int = typer.Option(None, "--dataset-version", help="Snapshot version; latest by default."),
    policy: str = typer.Option(None, help="Base policy name (default: the policy that generated the pairs)."),
    policy_version: int = typer.Option(None, help="Base policy version; latest by default."),
    config: Path = typer.Option(None, "--config", help="JSON file with DPOConfig fields (flags win)."),
    resume: int = typer.Option(None, "--resume", help="Continue training run RUN_ID from its last checkpoint."),
    **fields: Any,
) -> None:
    """Train with DPO (sigmoid/IPO/hinge/robust, RPO, LoRA) on a frozen snapshot and register the next
    policy version; --eval-only reports TRL's metrics instead. Every DPOConfig field is a flag."""
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo

    em = connect()
    try:
        cfg = DPOConfig.model_validate(_overrides(config, **fields))
        if dataset is None and resume is None:
            raise typer.BadParameter("give a DATASET name (or --resume RUN_ID)")
        ds = em.datasets.get(dataset, dataset_version) if dataset else None
        base = em.catalog.policy(policy, policy_version) if policy else None
        res = run_dpo(em, cfg, dataset=ds, base_policy=base, resume_run_id=resume)
    except (ValidationError, ValueError, FileNotFoundError) as exc:
        _fail(exc)
    if cfg.eval_only:
        console.print_json(json.dumps({"run_id": res.run_id, **res.summary["eval"]}))
        return
    s = res.summary
    console.print(
        f"{cfg.algorithm}: {s['pairs']} pairs, {res.steps} steps in {s['fit_seconds']:.1f}s "
        f"({s['tokens_per_s']:.0f} tokens/s, padding {100 * s['padding']:.1f}%), final loss "
        f"{s['final'].get('loss', float('nan')):.4f}, accuracy {s['final'].get('accuracy', float('nan')):.3f}"
    )
    if s.get("heldout_after"):
        console.print(
            f"held-out accuracy {s['heldout_before']['accuracy']:.3f} -> {s['heldout_after']['accuracy']:.3f} "
            f"on {s['heldout_after']['pairs']} pairs"
        )
    console.print(_summary_line(res))


def _register_dpo() -> None:
    from earmark.cli.common import handle_errors as _h
    from pipelines.training.config import DPOConfig

    sig = inspect.signature(dpo)
    fixed = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    dpo.__signature__ = sig.replace(parameters=fixed + _config_params(DPOConfig, DPO_FLAG_ALIASES))  # type: ignore[attr-defined]
    train_app.command("dpo")(_h(dpo))


_register_dpo()


@train_app.command("ppo")
@handle_errors
def ppo(
    policy: str = typer.Option(..., help="Registered policy to start from (also the KL reference)."),
    policy_version: int = typer.Option(None, help="Its version; latest by default."),
    algorithm: str = typer.Option(None, help="ppo (value head + GAE) or grpo (group-relative, default)."),
    rounds: int = typer.Option(None, help="Online rounds (default 3)."),
    samples: int = typer.Option(None, "--samples", "-k", help="Rollouts per prompt per round (default 4)."),
    prompts: str = typer.Option(None, "--prompts", help="Training prompts: a split (default train) or comma ids."),
    heldout: str = typer.Option(None, "--heldout", help="Evaluation prompts: a split (default heldout) or comma ids."),
    scorer: list[str] = typer.Option(
        None, "--scorer", help="Scorer name(s) whose scores form the reward (default prosody)."
    ),
    lr: float = typer.Option(None),
    kl_coef: float = typer.Option(None, help="KL penalty (PPO: in the reward; GRPO: loss term)."),
    epochs: int = typer.Option(None, help="Passes over each round's rollouts."),
    workers: int = typer.Option(
        None, "--workers", "-n", help="0: all in this process; 1: rollouts, scoring, learner on Ray."
    ),
    gpu: bool = typer.Option(None, "--gpu/--no-gpu", help="Learner on one GPU."),
    seed: int = typer.Option(None),
    output_name: str = typer.Option(None, help="Register the result under this name (default: the base's)."),
    config: Path = typer.Option(None, "--config", help="JSON file with PPOConfig fields (flags win)."),
) -> None:
    """Online PPO/GRPO rounds (rollouts -> scores -> update) and register the next policy version."""
    from pipelines.training.ppo import PPOConfig
    from pipelines.training.rl_job import run_rl

    splits = {"train", "heldout", "test"}

    def which(value: str | None, split_key: str, ids_key: str) -> dict[str, Any]:
        if value is None:
            return {}
        if value in splits:
            return {split_key: value}
        return {split_key: None, ids_key: [x.strip() for x in value.split(",") if x.strip()]}

    em = connect()
    try:
        cfg = PPOConfig.model_validate(
            _overrides(
                config,
                policy=policy,
                policy_version=policy_version,
                algorithm=algorithm,
                rounds=rounds,
                samples=samples,
                scorers=[{"name": n, "config": {}} for n in scorer] if scorer else None,
                lr=lr,
                kl_coef=kl_coef,
                epochs=epochs,
                num_workers=workers,
                use_gpu=gpu,
                seed=seed,
                output_name=output_name,
                **which(prompts, "split", "prompt_ids"),
                **which(heldout, "heldout_split", "heldout_prompt_ids"),
            )
        )
        res = run_rl(em, cfg)
    except (ValidationError, ValueError) as exc:
        _fail(exc)
    s = res.summary
    console.print(
        f"{cfg.algorithm}: {cfg.rounds} round(s) on {s['train_prompts']} prompts in {s['seconds']:.0f}s; "
        f"held-out reward {s['heldout_reward_before']:.3f} -> {s['heldout_reward_after']:.3f} "
        f"({s['heldout_prompts']} prompts), KL(pi||ref) {s['heldout_kl']['kl_k3_per_token']:.4f}/token"
    )
    console.print(_summary_line(res))


@train_app.command("runs")
@handle_errors
def runs(
    algorithm: str = typer.Option(None, help="Only runs of this algorithm."),
    limit: int = typer.Option(20, min=1, max=1000),
) -> None:
    """List training runs, newest first."""
    from earmark.services.training import TrainingService

    table = Table("run", "algorithm", "status", "dataset", "base", "output", "steps", "resumes", "started")
    for r in TrainingService(connect().ctx).runs(algorithm=algorithm, limit=limit):
        table.add_row(
            str(r.id),
            r.algorithm,
            r.status,
            str(r.dataset_id or "-"),
            str(r.base_policy_id or "-"),
            str(r.output_policy_id or "-"),
            str(len(r.metrics or [])),
            str(len(r.resumes or [])),
            r.started_at.isoformat(timespec="seconds") if r.started_at else "-",
        )
    console.print(table)


@train_app.command("show")
@handle_errors
def show(
    run_id: int = typer.Argument(...), metrics: bool = typer.Option(False, help="Print every step's metrics.")
) -> None:
    """Print a run's config, summary and resumes (and per-step metrics with --metrics)."""
    from earmark.services.training import TrainingService

    r = TrainingService(connect().ctx).get(run_id)
    doc = {
        "id": r.id,
        "algorithm": r.algorithm,
        "status": r.status,
        "dataset_id": r.dataset_id,
        "base_policy_id": r.base_policy_id,
        "output_policy_id": r.output_policy_id,
        "config": r.config,
        "summary": r.summary,
        "resumes": r.resumes,
        "steps": len(r.metrics or []),
    }
    if metrics:
        doc["metrics"] = r.metrics
    console.print_json(json.dumps(doc, default=str))


@train_app.command("online-dpo")
@handle_errors
def online_dpo(
    policy: str = typer.Option(..., help="Registered policy to sample from and train (the DPO reference)."),
    version: int = typer.Option(None, "--version", help="Its version; latest by default."),
    samples: int = typer.Option(None, "--samples", "-k", help="Rollouts per prompt (default 4)."),
    prompts: str = typer.Option(None, "--prompts", help="A split (default train) or comma-separated prompt ids."),
    round_: int = typer.Option(None, "--round", help="Loop round of the rollouts (default: version + 1)."),
    actors: int = typer.Option(None, help="Ray actors for rollouts and scoring (default 2)."),
    scorer: list[str] = typer.Option(None, "--scorer", help="Scorer(s) run on the rollouts (default prosody)."),
    ai_model: str = typer.Option(
        None, "--ai-model", help="Scorer that picks pairs and gives AI labels (default prosody)."
    ),
    quota: int = typer.Option(None, help="Judgments to wait for (default: half the campaign's tasks)."),
    quota_fraction: float = typer.Option(None, help="Share of the campaign's tasks to wait for (when no --quota)."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds to wait for the quota (default 600)."),
    poll: float = typer.Option(None, "--poll", help="Seconds between progress reads (default 2)."),
    ai_fill: bool = typer.Option(
        None, "--ai-fill/--no-ai-fill", help="AI labels for pairs nobody judged (default on)."
    ),
    close: str = typer.Option(None, "--close", help="Close the campaign: always (default), on_timeout or never."),
    overlap: int = typer.Option(None, help="Raters per item (default 3)."),
    gold_ratio: float = typer.Option(None, help="Share of gold items (default 0.1)."),
    max_items: int = typer.Option(None, help="Comparisons to ask about (default 2 per prompt)."),
    instructions: str = typer.Option(None, help="Instructions shown to raters."),
    epochs: int = typer.Option(None, help="DPO epochs (default 3)."),
    lr: float = typer.Option(None, help="DPO learning rate (default 2e-4)."),
    beta: float = typer.Option(None, help="DPO beta (default 0.1)."),
    threads: int = typer.Option(None, help="torch threads for the in-process DPO run."),
    config: Path = typer.Option(None, "--config", help="JSON file with OnlineDPOConfig fields (flags win)."),
) -> None:
    """One online DPO round: rollouts -> a campaign on them -> wait for people -> labels -> DPO -> next version."""
    from pipelines.online_dpo import OnlineDPOConfig, run_online_dpo_round

    splits = {"train", "heldout", "test"}
    em = connect()
    try:
        base = _overrides(config)
        campaign = {
            **base.get("campaign", {}),
            **{
                k: v
                for k, v in dict(
                    overlap=overlap, gold_ratio=gold_ratio, max_items=max_items, instructions=instructions
                ).items()
                if v is not None
            },
        }
        dpo_over = {
            **base.get("dpo", {}),
            **{k: v for k, v in dict(epochs=epochs, lr=lr, beta=beta, threads=threads).items() if v is not None},
        }
        which: dict[str, Any] = {}
        if prompts is not None:
            which = (
                {"split": prompts}
                if prompts in splits
                else {"split": None, "prompt_ids": [x.strip() for x in prompts.split(",") if x.strip()]}
            )
        cfg = OnlineDPOConfig.model_validate(
            _overrides(
                config,
                policy=policy,
                policy_version=version,
                samples=samples,
                round=round_,
                actors=actors,
                scorers=[{"name": n, "config": {}} for n in scorer] if scorer else None,
                ai_reward_model=ai_model,
                quota=quota,
                quota_fraction=quota_fraction,
                timeout_s=timeout,
                poll_s=poll,
                ai_fill=ai_fill,
                close_campaign=close,
                campaign=campaign or None,
                dpo=dpo_over or None,
                **which,
            )
        )

        def announce(camp: Any, q: int) -> None:
            console.print(
                f"[bold]campaign {escape(camp.name)}[/] (id {camp.id}) is open: judge it in the annotation "
                f"app (`earmark ui`, Rate page); waiting for {q} judgments, at most {cfg.timeout_s:.0f}s"
            )

        res = run_online_dpo_round(em, cfg, on_campaign=announce)
    except (ValidationError, ValueError) as exc:
        _fail(exc)
    if res.timed_out:
        console.print(
            f"[yellow]timed out[/] after {res.waited_s:.0f}s with {res.judgments}/{res.quota} judgments; "
            + ("AI labels filled the rest (marked 'ai')" if cfg.ai_fill else "trained on human labels only")
        )
    table = Table(
        title=f"online DPO round {res.round}: {escape(policy)} v{res.base_policy_version} -> v{res.new_policy_version}",
        show_header=False,
    )
    labels = res.label_counts
    for key, value in [
        ("campaign", f"{res.campaign_name} (id {res.campaign_id}, {res.campaign_status})"),
        ("judgments", f"{res.judgments} of quota {res.quota} ({res.tasks} tasks)"),
        ("wait", f"{'quota met' if res.quota_met else 'timed out'} after {res.waited_s:.1f}s"),
        (
            "labels human/adjudicated/ai",
            f"{labels.get('human', 0)}/{labels.get('adjudicated', 0)}/{labels.get('ai', 0)}",
        ),
        (
            "snapshot",
            f"{res.dataset_name} v{res.dataset_version} (id {res.dataset_id}) sha256 {res.snapshot_sha256[:16]}",
        ),
        ("training run", str(res.training_run_id)),
        ("final step", ", ".join(f"{k} {v:.3f}" for k, v in res.train_metrics.items()) or "-"),
        ("new policy", f"{res.policy.name} v{res.new_policy_version} (id {res.policy.id})"),
    ]:
        table.add_row(key, escape(value))
    console.print(table)
