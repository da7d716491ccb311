"""``run_dpo``: snapshot -> reference log-probs -> DPO-family workers -> registered policy version.

    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo
    result = run_dpo(em, DPOConfig(beta=0.1, epochs=2, num_workers=2), dataset=em.datasets.get("prefs"))
    result = run_dpo(em, DPOConfig(model="/ckpt/my-sft", use_peft=True, lr=5e-5), rows=text_pairs)


Everything the run does is on its ``training_runs`` row: the config, the dataset and base policy,
the reference sidecar's sha256, per-step metrics, resumes, the held-out evaluation and the output
policy. A failure marks the row failed with the error before re-raising.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training.config import DPOConfig
from pipelines.training.dpo import evaluate
from pipelines.training.driver import (
    RunRecorder,
    RunResult,
    cleanup,
    fit,
    load_local_policy,
    mark_failed,
    policy_row,
    publish_policy,
)

if TYPE_CHECKING:
    from earmark.api import Earmark

ENTRY = "pipelines.training.dpo:train_worker"


def _dataset_by_id(em: Earmark, dataset_id: int) -> Any:
    from earmark.errors import NotFound
    from earmark.store.models import Dataset

    ds = em.ctx.tx(lambda s: s.get(Dataset, dataset_id))
    if ds is None:
        raise NotFound(f"dataset id {dataset_id} does not exist")
    return ds


def _register_checkpoint(em: Earmark, cfg: DPOConfig) -> Any:
    """The policy row of ``cfg.model`` (an HF folder or cached hub id), registered as kind ``hf`` if new."""
    from pipelines.training.worker import resolve_model_dir

    path = resolve_model_dir(cfg.model or "")
    uri = path.as_uri()
    same = [p for p in em.catalog.policies() if p.uri == uri]
    if same:
        return same[-1]
    name = cfg.output_name or path.name.replace("models--", "").replace("--", "-")
    return em.catalog.register_policy(name, uri, kind="hf", config={"speak_text": True})


def _base_row(em: Earmark, base_policy: Any, rows: list[dict[str, Any]]) -> Any:
    if base_policy is None:
        ids = Counter(r["policy_id"] for r in rows if r.get("policy_id") is not None)
        if not ids:
            raise ValueError(
                "the snapshot rows name no policy_id; pass base_policy= (a policy row or id) to train from"
            )
        base_policy = ids.most_common(1)[0][0]  # the policy that generated the responses: DPO's natural reference
    return policy_row(em, base_policy) if isinstance(base_policy, int) else base_policy


def run_dpo(
    em: Earmark,
    cfg: DPOConfig,
    *,
    dataset: Any = None,
    rows: list[dict[str, Any]] | None = None,
    base_policy: Any = None,
    progress: bool = True,
    on_event: Any = None,
    resume_run_id: int | None = None,
) -> RunResult:
    from earmark.services.training import TrainingService
    from pipelines.training import reference
    from pipelines.training.data import (
        pairs_from_rows,
        policy_token_info,
        rows_sha256,
        split_heldout,
        step_plan,
        truncate_pair,
    )
    from pipelines.training.worker import default_threads, load_lm, load_state, resolve_model_dir

    training = TrainingService(em.ctx)
    run = None
    if resume_run_id is not None:
        run = training.get(resume_run_id)
        if run.algorithm not in ("dpo", "ipo"):
            raise ValueError(f"run {resume_run_id} is a {run.algorithm} run; resume it with its own command")
        cfg = DPOConfig.model_validate(run.config)  # a resumed run keeps its own config
        dataset = (
            dataset
            if dataset is not None or rows is not None
            else (_dataset_by_id(em, run.dataset_id) if run.dataset_id else None)
        )
        base_policy = base_policy if base_policy is not None else run.base_policy_id
    if isinstance(dataset, str):
        dataset = em.datasets.get(dataset)
    if dataset is not None:
        rows, data_sha, dataset_id = em.datasets.load(dataset).to_pylist(), dataset.content_sha256, dataset.id
    elif rows:
        data_sha, dataset_id = rows_sha256(rows), None
    else:
        raise ValueError("pass dataset= (a snapshot row or name) or rows= (snapshot-schema dicts) to train on")
    if cfg.model and base_policy is None:
        base_policy = _register_checkpoint(em, cfg)
    base = _base_row(em, base_policy, rows)
    policy, model_dir = load_local_policy(base)
    _end, _stops, pad_id = policy_token_info(policy)
    limit = int(getattr(policy.model.config, "max_position_embeddings", 0)) or None
    if cfg.max_length:
        limit = min(limit or cfg.max_length, cfg.max_length)
    pairs = [
        truncate_pair(p, limit, cfg.max_prompt_length, cfg.truncation_mode)
        for p in pairs_from_rows(rows, policy, append_end=cfg.append_end, label_sources=cfg.label_sources)
    ]
    train, heldout = split_heldout(pairs, cfg.eval_fraction, cfg.seed)
    if run is None:
        run = training.create_run(
            cfg.algorithm,
            cfg.model_dump(mode="json"),
            dataset_id=dataset_id,
            base_policy_id=base.id,
            summary={"dataset_sha256": data_sha},
        )
    training.mark_running(run.id)
    recorder = None
    final = None
    try:
        ref_dir = resolve_model_dir(cfg.ref_model) if cfg.ref_model else model_dir
        ref_lm = policy.model if ref_dir == model_dir else load_lm(ref_dir)
        recipe = f"{limit}:{cfg.max_prompt_length}:{cfg.truncation_mode}"
        key = reference.reference_key(
            data_sha, reference.weights_sha256(ref_dir), append_end=cfg.append_end, context=recipe
        )
        # held-out and eval-only metrics always use precomputed (cached) reference log-probs
        ref_c, ref_r, ref_info = reference.ensure(
            em,
            training,
            run.id,
            pairs,
            ref_lm,
            pad_id,
            key=key,
            limit=limit,
            threads=default_threads(cfg.threads, True),
        )
        if ref_lm is not policy.model:
            del ref_lm
        pos = {p.row_id: i for i, p in enumerate(pairs)}

        def pick(ps, xs):
            return [xs[pos[p.row_id]] for p in ps]

        def score(ps):
            return evaluate(
                policy.model,
                ps,
                pick(ps, ref_c),
                pick(ps, ref_r),
                pad_id,
                cfg.beta,
                loss_type=cfg.loss_type,
                label_smoothing=cfg.label_smoothing,
                rpo_alpha=cfg.rpo_alpha,
                chunk_tokens=cfg.chunk_tokens,
            )

        if cfg.eval_only:  # no training, nothing registered: TRL's evaluation metrics on every pair
            t0 = time.perf_counter()
            ev = score(pairs)
            summary = {"eval": ev, "pairs": len(pairs), "eval_seconds": round(time.perf_counter() - t0, 3)}
            summary["reference_logps"] = ref_info
            training.mark_succeeded(run.id, summary)
            return RunResult(run.id, None, model_dir, 0, [], summary, [])
        heldout_before = score(heldout)
        split = max(1, cfg.num_workers) * cfg.grad_accum
        steps = len(step_plan(len(train), cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed, min_batch=split))
        recorder = RunRecorder(
            training,
            run.id,
            steps,
            progress=progress,
            on_event=on_event,
            desc=f"{cfg.algorithm} run {run.id} ({'in-process' if not cfg.num_workers else f'{cfg.num_workers} Ray Train workers'})",
        )
        payload = {
            "config": cfg.model_dump(mode="json"),
            "pairs": train,
            "ref_chosen": pick(train, ref_c) if cfg.precompute_ref_log_probs else None,
            "ref_rejected": pick(train, ref_r) if cfg.precompute_ref_log_probs else None,
            "ref_model_dir": str(Path(ref_dir).resolve()),
            "model_dir": str(model_dir.resolve()),
            "pad_id": pad_id,
        }
        t0 = time.perf_counter()
        final = fit(
            em,
            ENTRY,
            payload,
            run_id=run.id,
            algorithm=cfg.algorithm,
            num_workers=cfg.num_workers,
            use_gpu=cfg.use_gpu,
            cpus_per_worker=cfg.cpus_per_worker,
            max_failures=cfg.max_failures,
            keep=cfg.keep_checkpoints,
            storage_path=cfg.storage_path,
            recorder=recorder,
        )
        fit_s = time.perf_counter() - t0
        recorder.flush()
        row, path = publish_policy(
            em,
            training,
            run.id,
            base,
            policy,
            load_state(final[0]),
            name=cfg.output_name or base.name,
            dataset_id=dataset_id,
            lora=cfg if cfg.use_peft else None,
        )
        heldout_after = score(heldout)
        m = recorder.metrics
        step_s = sum(x["seconds"] for x in m)
        summary = {
            "pairs": len(train),
            "heldout_pairs": len(heldout),
            "steps": steps,
            "fit_seconds": round(fit_s, 3),
            "step_seconds": round(step_s, 3),
            "startup_seconds": round(max(0.0, fit_s - step_s), 3),
            "tokens_per_s": sum(x["tokens"] for x in m) / step_s if step_s else 0.0,
            "padding": sum(x["padding"] for x in m) / len(m) if m else 0.0,
            "final": m[-1] if m else {},
            "heldout_before": heldout_before,
            "heldout_after": heldout_after,
            "mode": "in-process" if not cfg.num_workers else f"ray-train:{cfg.num_workers}",
            "output_path": str(path),
            "reference_logps": ref_info,
        }
        training.mark_succeeded(run.id, summary, output_policy_id=row.id)
        if not final[1]:  # in-process checkpoints: the registered policy folder now holds the result
            shutil.rmtree(final[0].parent, ignore_errors=True)
        return RunResult(run.id, row, path, steps, list(m), summary, list(recorder.resumes))
    except BaseException as exc:
        if recorder is not None:
            recorder.flush()
        mark_failed(training, run.id, exc)
        raise
    finally:
        if recorder is not None:
            recorder.close()
        cleanup(final)
