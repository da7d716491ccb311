"""``run_rl``: online PPO/GRPO rounds whose rollouts and scores land in the store like any other.

Lineage: the run registers its round policies as ``<base name>.<algorithm>-run<id>`` v0 (the base
weights), v1, ... so every round's rollouts point at the exact weights that sampled them; the final
weights become the next version of the base name (parent = base, training run = this run). Held-out
prompts are rolled out and scored before (round-0 policy) and after (the registered result) at round
``EVAL_ROUND``, and KL(pi || reference) is measured on the held-out samples of the result.

Modes: ``num_workers=0`` keeps the learner in this process and samples with it directly (then
stores through ``pipelines.rollouts.store``, the rows the rollout actors build); ``num_workers=1``
runs the rollout job and the scoring job on their Ray actor pools and the learner in a Ray actor,
re-created from the last round's checkpoint if it dies (the run row records the resume).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.driver import RunRecorder, RunResult, load_local_policy, mark_failed, publish_policy, run_dir
from pipelines.training.ppo import PPOConfig, RLLearner

if TYPE_CHECKING:
    from earmark.api import Earmark

EVAL_ROUND = 1000  # held-out evaluation rollouts; training rounds are 1..rounds


def _single_turn(prompts: list[Any]) -> list[Any]:
    """Prompts with one user turn to answer: the only ones whose context is fully known to the learner."""
    return [
        p
        for p in prompts
        if sum(m.get("role") == "user" for m in p.messages) == 1 and p.messages[-1].get("role") == "user"
    ]


def _prompts(em: Earmark, split: str | None, ids: list[str] | None, regime: str | None, what: str) -> list[Any]:
    found = _single_turn(em.catalog.prompts(regime=regime, split=None if ids else split, external_ids=ids))
    if not found:
        raise ValueError(
            f"no single-turn {what} prompts (split={split!r}, ids={ids}); import prompts or change the "
            f"{'heldout_' if what == 'held-out' else ''}split/prompt ids"
        )
    return found


class _Rounds:
    """Sampling, scoring and reward composition for one run, in-process or on Ray."""

    def __init__(self, em: Earmark, cfg: PPOConfig, base_policy: Any, run_name: str) -> None:
        from pipelines.scoring_job import ScorerSpec, register
        from reward_models.composition import RewardComposition

        self.em, self.cfg, self.policy, self.run_name = em, cfg, base_policy, run_name
        self.specs = [ScorerSpec(**s) for s in cfg.scorers]
        self.rm_ids = {rm_id for _, rm_id in register(em, self.specs)}
        self.composition = RewardComposition.model_validate(cfg.composition) if cfg.composition else RewardComposition()

    def rollouts(self, policy_row: Any, prompts: list[Any], round: int, samples: int, seed: int) -> list[Any]:
        from pipelines.policy.base import SamplingParams

        params = SamplingParams(
            temperature=self.cfg.temperature, top_p=self.cfg.top_p, max_new_tokens=self.cfg.max_new_tokens
        )
        if self.cfg.num_workers == 0:
            from pipelines import rollouts

            cards = self.em.catalog.persona_cards(p.persona_id for p in prompts)
            have = self.em.rollouts.existing_keys(policy_row.id, round, [p.id for p in prompts])
            todo = [p for p in prompts if any((p.id, k) not in have for k in range(samples))]
            results = []
            for p in todo:
                # One call per prompt with the prompt's own seed: the policy derives each sample's seed from
                # (seed, sample index), so one call over all prompts would give every prompt the same K
                # random streams and make the round's samples correlated across prompts.
                conv = rollouts.prompt_conversation(p.messages, cards.get(p.persona_id))
                p_seed = rollouts.derive_seed(seed, round, p.id, 0, 0)
                out = self.policy.generate([rollouts.for_policy(conv)], params, num_samples=samples, seed=p_seed)[0]
                results += [
                    (rollouts.WorkItem(p.id, k, conv), [s], p_seed) for k, s in enumerate(out) if (p.id, k) not in have
                ]
            if results:
                rollouts.store(self.em, policy_row.id, round, params, results, vocab=self.policy.name)
        else:
            from pipelines.rollout_job import RolloutJobConfig, run_rollout_job

            run_rollout_job(
                self.em,
                RolloutJobConfig(
                    policy=policy_row.name,
                    policy_version=policy_row.version,
                    split=None,
                    regime=self.cfg.regime,
                    prompt_ids=[p.external_id for p in prompts],
                    samples=samples,
                    round=round,
                    actors=self.cfg.rollout_actors,
                    batch_size=self.cfg.rollout_batch_size,
                    temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p,
                    max_new_tokens=self.cfg.max_new_tokens,
                    seed=seed,
                ),
                progress=False,
            )
        return self.em.rollouts.list(policy_id=policy_row.id, round=round, prompt_ids=[p.id for p in prompts])

    def rewards(self, policy_row: Any, rows: list[Any], round: int, regimes: dict[int, str]) -> list[float]:
        from pipelines.scoring_job import ScoringJobConfig, run_scoring_job

        run_scoring_job(
            self.em,
            ScoringJobConfig(
                scorers=self.specs, policy_id=policy_row.id, rounds=[round], actors=self.cfg.scoring_actors
            ),
            progress=False,
            use_ray=self.cfg.num_workers > 0,
        )
        dims: dict[int, dict[str, list[float]]] = {}
        for s in self.em.scores.for_rollouts([r.id for r in rows]):
            if s.reward_model_id in self.rm_ids:
                dims.setdefault(s.rollout_id, {}).setdefault(s.dimension, []).append(s.score)
        out = []
        for r in rows:
            d = {k: sum(v) / len(v) for k, v in dims.get(r.id, {}).items()}
            out.append(self.composition.compose(regimes[r.prompt_id], d).total)
        return out


def _learner(cfg: PPOConfig, model_dir: Path, pad_id: int, state: dict[str, Any] | None) -> Any:
    args = (str(model_dir.resolve()), cfg.model_dump(mode="json"), pad_id, state)
    if cfg.num_workers == 0:
        return RLLearner(*args)
    import ray

    from pipelines.training.worker import default_threads

    actor = ray.remote(RLLearner).options(
        num_cpus=cfg.learner_cpus,
        num_gpus=1 if cfg.use_gpu else 0,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(default_threads(cfg.threads, False, cfg.learner_cpus))}},
    )
    return actor.remote(*args)


def _call(learner: Any, method: str, *args: Any) -> Any:
    fn = getattr(learner, method)
    if hasattr(fn, "remote"):
        import ray

        return ray.get(fn.remote(*args))
    return fn(*args)


def run_rl(em: Earmark, cfg: PPOConfig, *, progress: bool = True, on_event: Any = None) -> RunResult:
    """Run ``cfg.rounds`` online rounds and register the result; everything is recorded on the run row."""
    from earmark.services.training import TrainingService
    from pipelines.training.data import policy_token_info
    from pipelines.training.worker import default_threads, set_threads

    training = TrainingService(em.ctx)
    base = em.catalog.policy(cfg.policy, cfg.policy_version)
    policy, model_dir = load_local_policy(base)
    _end, _stops, pad_id = policy_token_info(policy)
    train_prompts = _prompts(em, cfg.split, cfg.prompt_ids, cfg.regime, "training")
    heldout = _prompts(em, cfg.heldout_split, cfg.heldout_prompt_ids, cfg.regime, "held-out")
    regimes = {p.id: p.regime for p in train_prompts + heldout}
    run = training.create_run(cfg.algorithm, cfg.model_dump(mode="json"), base_policy_id=base.id)
    training.mark_running(run.id)
    run_name = f"{base.name}.{cfg.algorithm}-run{run.id}"
    folder = run_dir(em, cfg.algorithm, run.id)
    if cfg.num_workers:
        from pipelines.ray_runtime import ensure_ray

        ensure_ray(em.settings)
    set_threads(default_threads(cfg.threads, cfg.num_workers == 0))
    recorder = RunRecorder(
        training, run.id, cfg.rounds, progress=progress, on_event=on_event, desc=f"{cfg.algorithm} run {run.id}"
    )
    try:
        t_start = time.perf_counter()
        current = training.register_output_policy(
            run.id,
            run_name,
            base.uri,
            kind=base.kind,
            parent_id=base.id,
            dataset_id=None,
            version=0,
            config=dict(base.config or {}),
        )
        rounds = _Rounds(em, cfg, policy, run_name)
        before_rows = rounds.rollouts(current, heldout, EVAL_ROUND, cfg.eval_samples, cfg.seed + EVAL_ROUND)
        before = rounds.rewards(current, before_rows, EVAL_ROUND, regimes)
        learner, state = _learner(cfg, model_dir, pad_id, None), None
        for r in range(1, cfg.rounds + 1):
            t0 = time.perf_counter()
            rows = rounds.rollouts(current, train_prompts, r, cfg.samples, cfg.seed * 1000 + r)
            t_roll = time.perf_counter()
            rewards = rounds.rewards(current, rows, r, regimes)
            t_score = time.perf_counter()
            prompts = [policy.prompt_ids(_context(em, row)) for row in rows]
            responses = [list(row.token_ids) for row in rows]
            try:
                metrics = _call(learner, "update", prompts, responses, rewards, [row.prompt_id for row in rows], r)
            except Exception as exc:  # the learner actor died: re-create it from the last round's state
                if not cfg.num_workers or not _actor_died(exc):
                    raise
                learner = _learner(cfg, model_dir, pad_id, state)
                recorder(
                    {
                        "type": "resumed",
                        "from_step": r - 1,
                        "attempt": len(recorder.resumes) + 1,
                        "reason": f"learner actor died ({type(exc).__name__}); re-created from round {r - 1}",
                    }
                )
                metrics = _call(learner, "update", prompts, responses, rewards, [row.prompt_id for row in rows], r)
            t_update = time.perf_counter()
            # The driver writes the round's policy (weights fetched from the learner, wherever it runs), so
            # the rollout actors of the next round load it from the same place as any registered policy.
            state = _call(learner, "state_dict")
            path = _save_round(policy, state, folder / f"round-{r}", run_name, r)
            current = training.register_output_policy(
                run.id,
                run_name,
                path.resolve().as_uri(),
                kind=base.kind,
                parent_id=current.id,
                dataset_id=None,
                version=r,
                config=dict(base.config or {}),
            )
            timing = {
                "rollout_s": t_roll - t0,
                "score_s": t_score - t_roll,
                "update_s": t_update - t_score,
                "round_s": time.perf_counter() - t0,
            }
            for m in metrics:
                recorder({"type": "step", **m, **timing})
            recorder({"type": "checkpoint", "step": r})
        recorder.flush()
        row, path = publish_policy(
            em, training, run.id, base, policy, state, name=cfg.output_name or base.name, dataset_id=None
        )
        after_rows = rounds.rollouts(row, heldout, EVAL_ROUND, cfg.eval_samples, cfg.seed + EVAL_ROUND)
        after = rounds.rewards(row, after_rows, EVAL_ROUND, regimes)
        kl = _call(
            learner,
            "kl_to_reference",
            [policy.prompt_ids(_context(em, x)) for x in after_rows],
            [list(x.token_ids) for x in after_rows],
        )
        summary = {
            "rounds": cfg.rounds,
            "train_prompts": len(train_prompts),
            "heldout_prompts": len(heldout),
            "heldout_reward_before": sum(before) / len(before),
            "heldout_reward_after": sum(after) / len(after),
            "heldout_kl": kl,
            "round_policy": run_name,
            "output_path": str(path),
            "composition": rounds.composition.version,
            "scorers": [s.model_dump() for s in rounds.specs],
            "seconds": round(time.perf_counter() - t_start, 3),
            "mode": "in-process" if not cfg.num_workers else "ray",
        }
        training.mark_succeeded(run.id, summary, output_policy_id=row.id)
        if cfg.num_workers:
            import ray

            ray.kill(learner)
        return RunResult(
            run.id, row, path, len(recorder.metrics), list(recorder.metrics), summary, list(recorder.resumes)
        )
    except BaseException as exc:
        recorder.flush()
        mark_failed(training, run.id, exc)
        raise
    finally:
        recorder.close()


def _context(em: Earmark, row: Any) -> list[dict[str, Any]]:
    """The conversation the rollout answered: its messages before the final assistant turn."""
    from pipelines.rollouts import for_policy

    msgs = list(row.messages or [])
    return for_policy(msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs)


def _save_round(policy: Any, state: dict[str, Any], folder: Path, run_name: str, round: int) -> Path:
    """Load the learner's weights into the driver's policy (next round samples with them in-process)
    and save it as a loadable checkpoint, with the learner state beside it for recovery."""
    import torch

    policy.model.load_state_dict({k[len("lm.") :]: v for k, v in state["model"].items() if k.startswith("lm.")})
    path = policy.save(folder / "policy", version=f"v{round}") if hasattr(policy, "save") else None
    if path is None:
        path = folder / "policy"
        policy.model.save_pretrained(path)
        policy.tokenizer.save_pretrained(path)
    manifest_path = path / "earmark_policy.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update({"name": run_name, "version": f"v{round}"})
    manifest_path.write_text(json.dumps(manifest, indent=2))
    torch.save(state, folder / "learner.pt")
    return path


def _actor_died(exc: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(exc, ActorDiedError | ActorUnavailableError | RayActorError)
