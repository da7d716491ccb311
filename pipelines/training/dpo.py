"""DPO / IPO / cDPO on a frozen snapshot: the config, the worker loop, and ``run_dpo``.

``run_dpo`` is the whole job: read the snapshot, compute (or reuse) the reference log-probs once,
train in-process (``num_workers=0``) or with DDP over N Ray Train workers, record per-step metrics
on the training run row, and register the result as the next version of the policy.

    from pipelines.training.dpo import DPOConfig, run_dpo
    result = run_dpo(em, DPOConfig(beta=0.1, epochs=2, num_workers=2), dataset=em.datasets.get("prefs"))
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from pipelines.training.data import PreferencePair


class DPOConfig(BaseModel):
    """One preference-optimisation run; stored verbatim on its training run row.

    Batch arithmetic: ``batch_size`` pairs make one optimizer step over all workers; each worker
    takes batch_size / workers of them, in ``grad_accum`` micro-batches (so batch_size must be a
    multiple of workers x grad_accum). The loss is the weight-normalised mean over the step's pairs
    whatever the split, so changing workers or accumulation does not change the gradient.
    """

    beta: float = Field(0.1, gt=0, description="KL strength: implicit reward = beta * log(pi/ref)")
    loss_type: Literal["sigmoid", "ipo"] = Field(
        "sigmoid", description="sigmoid = DPO (cDPO with label_smoothing); ipo"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="cDPO: assumed label-flip rate")
    margin_as_confidence: bool = Field(False, description="cDPO per pair: flip rate = max(label_smoothing, 1 - margin)")
    use_weights: bool = Field(True, description="weight each pair's loss by the snapshot's weight column")
    label_sources: list[str] | None = Field(
        None, description="train only on these label sources (human/adjudicated/ai)"
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (after warm-up)")
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    max_grad_norm: float = Field(1.0, gt=0)
    epochs: int = Field(1, ge=1, le=1000)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(16, ge=1, description="pairs per optimizer step, over all workers")
    grad_accum: int = Field(1, ge=1, description="micro-batches per step on each worker")
    num_workers: int = Field(0, ge=0, le=512, description="Ray Train DDP workers; 0 = train in this process")
    use_gpu: bool = Field(False, description="one GPU per Ray Train worker")
    cpus_per_worker: float = Field(1.0, gt=0)
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch threads per worker; default: all cores in-process, cpus_per_worker on Ray Train",
    )
    checkpoint_every: int = Field(50, ge=0, description="checkpoint every K steps (0: only the final one)")
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0, description="Ray Train restarts from the last checkpoint after a worker dies")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="share of prompts held out for the end-of-run evaluation")
    append_end: bool = Field(True, description="train the end-of-turn token after each response")
    chunk_tokens: int = Field(4096, ge=64, description="padded tokens per forward chunk (memory bound)")
    seed: int = 0
    output_name: str | None = Field(None, description="registered name of the result; default: the base policy's")
    storage_path: str | None = Field(
        None, description="Ray Train storage (shared FS or s3://); default EARMARK_HOME/training"
    )

    @model_validator(mode="after")
    def _divisible(self) -> DPOConfig:
        split = max(1, self.num_workers) * self.grad_accum
        if self.batch_size % split:
            raise ValueError(
                f"batch_size={self.batch_size} must be a multiple of workers x grad_accum = {split}; "
                f"use batch_size={-(-self.batch_size // split) * split}"
            )
        return self

    @property
    def algorithm(self) -> str:
        return "ipo" if self.loss_type == "ipo" else "dpo"


N_STATS = 11  # see _stats
# Log-ratio margins below this are float noise (the reference pass and a training forward batch rows
# differently), so they count as ties (1/2) in accuracies rather than as coin flips.
TIE_TOL = 1e-4


def _correct(chosen_rewards: Any, rejected_rewards: Any, beta: float) -> Any:
    d = (chosen_rewards - rejected_rewards) / beta
    return (d > TIE_TOL).double() + 0.5 * (d.abs() <= TIE_TOL).double()


def train_worker(payload: dict[str, Any], backend: Any) -> None:
    """The training loop; identical in-process and on every Ray Train worker."""
    import time

    import torch

    from pipelines.training.data import shard_step, step_plan
    from pipelines.training.losses import preference_loss
    from pipelines.training.sequences import SequenceScorer, pack
    from pipelines.training.worker import (
        LocalBackend,
        default_threads,
        load_lm,
        load_state,
        lr_at,
        make_optimizer,
        set_threads,
        unwrap,
    )

    cfg = DPOConfig(**payload["config"])
    set_threads(default_threads(cfg.threads, isinstance(backend, LocalBackend), cfg.cpus_per_worker))
    torch.manual_seed(cfg.seed)
    pairs: list[PreferencePair] = payload["pairs"]
    ref_c = torch.tensor(payload["ref_chosen"], dtype=torch.float32)
    ref_r = torch.tensor(payload["ref_rejected"], dtype=torch.float32)
    weights = torch.tensor([p.weight if cfg.use_weights else 1.0 for p in pairs], dtype=torch.float32)
    eps = torch.tensor(
        [max(cfg.label_smoothing, 1.0 - p.margin) if cfg.margin_as_confidence else cfg.label_smoothing for p in pairs],
        dtype=torch.float32,
    ).clamp(0.0, 0.49)
    lm = load_lm(payload["model_dir"])
    limit = int(getattr(lm.config, "max_position_embeddings", 0)) or None
    device = backend.device()
    model = backend.prepare(SequenceScorer(lm).to(device))
    model.train()
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    start = 0
    ckpt = backend.latest_checkpoint()
    if ckpt is not None:
        state = load_state(ckpt)
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, backend.attempt = int(state["step"]), int(state.get("attempt", 0)) + 1
        backend.emit({"type": "resumed", "from_step": start, "pid": os.getpid()})
    backend.emit(
        {"type": "started", "pid": os.getpid(), "world": backend.world, "start_step": start, "device": str(device)}
    )
    plan = step_plan(len(pairs), cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed)
    steps_per_epoch = max(1, -(-len(pairs) // cfg.batch_size))
    metrics: dict[str, Any] = {}
    for step in range(start, len(plan)):
        t0 = time.perf_counter()
        idx = plan[step]
        wsum = float(weights[idx].sum())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps)
        stats = torch.zeros(N_STATS, dtype=torch.float64)
        micro = shard_step(idx, backend.rank, backend.world, cfg.grad_accum)
        for m, mb in enumerate(micro):
            n = len(mb)
            batch = pack(
                [pairs[i].chosen_row() for i in mb] + [pairs[i].rejected_row() for i in mb],
                payload["pad_id"],
                limit=limit,
                chunk_tokens=cfg.chunk_tokens,
            ).to(device)
            with backend.no_sync(model, last_micro=m == len(micro) - 1):
                seq = model(batch.chunks, batch.n_rows)["seq_logps"]
                lengths = batch.response_lengths.to(seq.dtype)
                res = preference_loss(
                    seq[:n],
                    seq[n:],
                    ref_c[mb].to(device),
                    ref_r[mb].to(device),
                    beta=cfg.beta,
                    loss_type=cfg.loss_type,
                    label_smoothing=eps[mb].to(device),
                    chosen_lengths=lengths[:n],
                    rejected_lengths=lengths[n:],
                )
                w = weights[mb].to(device)
                # sum / (the whole step's weight) x world: DDP's gradient mean over workers then
                # gives exactly the weighted mean over all pairs of the step
                ((res.losses * w).sum() / wsum * backend.world).backward()
            stats += _stats(
                res, cfg.beta, w, seq.detach(), torch.cat([ref_c[mb], ref_r[mb]]).to(device), lengths, batch
            )
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats = backend.all_reduce_sum(stats)
        seconds = time.perf_counter() - t0
        metrics = _metrics(
            stats, step + 1, step // steps_per_epoch, opt.param_groups[0]["lr"], float(grad_norm), seconds
        )
        backend.emit({"type": "step", **metrics})
        if cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < len(plan):
            backend.checkpoint(step + 1, model, opt, metrics)
    backend.checkpoint(len(plan), model, opt, metrics, final=True)
    backend.emit({"type": "done", "steps": len(plan)})


def _stats(res: Any, beta: float, w: Any, seq: Any, ref: Any, lengths: Any, batch: Any) -> Any:
    import torch

    return torch.tensor(
        [
            float((res.losses.detach() * w).sum()),
            float(w.sum()),
            float(_correct(res.chosen_rewards, res.rejected_rewards, beta).sum()),
            float(len(w)),
            float((res.chosen_rewards - res.rejected_rewards).sum()),
            float(res.chosen_rewards.sum()),
            float(res.rejected_rewards.sum()),
            float((ref - seq).sum()),
            float(lengths.sum()),
            float(batch.real_tokens),
            float(batch.padded_tokens),
        ],
        dtype=torch.float64,
    )


def _metrics(s: Any, step: int, epoch: int, lr: float, grad_norm: float, seconds: float) -> dict[str, Any]:
    s = s.tolist()
    n = max(s[3], 1.0)
    return {
        "step": step,
        "epoch": epoch,
        "loss": s[0] / max(s[1], 1e-12),
        "accuracy": s[2] / n,
        "reward_margin": s[4] / n,
        "chosen_reward": s[5] / n,
        "rejected_reward": s[6] / n,
        # k1 estimate of KL(ref || policy) per response token: exact in expectation when the
        # responses were sampled from the reference, as rollouts of the base policy are
        "kl": s[7] / max(s[8], 1.0),
        "pairs": int(s[3]),
        "tokens": int(s[9]),
        "tokens_per_s": s[9] / seconds if seconds > 0 else 0.0,
        "padding": 1.0 - s[9] / max(s[10], 1.0),
        "lr": lr,
        "grad_norm": grad_norm,
        "seconds": seconds,
    }


def evaluate(
    model: Any,
    pairs: list[PreferencePair],
    ref_chosen: list[float],
    ref_rejected: list[float],
    pad_id: int,
    beta: float,
) -> dict[str, float]:
    """Held-out preference accuracy: share of pairs whose implicit reward ranks chosen first (ties 1/2).

    Before any training the policy is the reference, every margin is 0 and the accuracy is 0.5.
    """
    import torch

    from pipelines.training.sequences import sequence_logps

    if not pairs:
        return {}
    limit = int(getattr(model.config, "max_position_embeddings", 0)) or None
    model.eval()
    logps = sequence_logps(
        model, [p.chosen_row() for p in pairs] + [p.rejected_row() for p in pairs], pad_id, limit=limit
    )
    n = len(pairs)
    chosen = beta * (logps[:n] - torch.tensor(ref_chosen, dtype=torch.float64))
    rejected = beta * (logps[n:] - torch.tensor(ref_rejected, dtype=torch.float64))
    return {
        "accuracy": float(_correct(chosen, rejected, beta).mean()),
        "reward_margin": float((chosen - rejected).mean()),
        "pairs": n,
    }


def run_dpo(
    em: Any,
    cfg: DPOConfig,
    *,
    dataset: Any = None,
    rows: list[dict[str, Any]] | None = None,
    base_policy: Any = None,
    progress: bool = True,
    on_event: Any = None,
    resume_run_id: int | None = None,
) -> Any:
    """Train on a snapshot (a ``datasets`` row or name, or ``rows`` of the snapshot schema) -> ``RunResult``.

    The base policy (and DPO reference) defaults to the policy that generated most of the responses.
    ``resume_run_id`` continues a failed or interrupted run from its last checkpoint with its stored config.
    """
    from pipelines.training.dpo_job import run_preference_job

    return run_preference_job(
        em,
        cfg,
        dataset=dataset,
        rows=rows,
        base_policy=base_policy,
        progress=progress,
        on_event=on_event,
        resume_run_id=resume_run_id,
    )
