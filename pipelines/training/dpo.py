"""DPO-family training maths and model code: the worker loop, LoRA wrapping, evaluation metrics.

Pure model code, no store: ``pipelines.training.dpo_job.run_dpo`` is the job around it (snapshot,
reference log-probs, run row, registration). The loop here runs unchanged in-process and on every
Ray Train worker.

    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo
    result = run_dpo(em, DPOConfig(beta=0.1, epochs=2, num_workers=2), dataset=em.datasets.get("prefs"))
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import Any

from pipelines.training.config import DPOConfig
from pipelines.training.data import PreferencePair

__all__ = ["DPOConfig", "evaluate", "train_worker", "wrap_lora"]


def wrap_lora(lm: Any, cfg: DPOConfig) -> Any:
    """LoRA adapters (peft) on ``lm``; an ``lm`` that already carries an adapter keeps training it."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(lm, PeftModel):
        for n, p in lm.named_parameters():
            p.requires_grad_("lora_" in n)
        return lm
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets(),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(lm, lora)


def prepare_lm(lm: Any, cfg: DPOConfig) -> Any:
    if cfg.use_peft:
        lm = wrap_lora(lm, cfg)
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.use_peft:
            lm.enable_input_require_grads()
    return lm


def autocast(device: Any, bf16: bool) -> Any:
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


N_STATS = 13  # see _stats
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
    from pipelines.training.sequences import SequenceScorer, _scored_positions, pack
    from pipelines.training.worker import (
        LocalBackend,
        configure_cuda,
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
    precomputed = payload.get("ref_chosen") is not None
    if precomputed:
        ref_c = torch.tensor(payload["ref_chosen"], dtype=torch.float32)
        ref_r = torch.tensor(payload["ref_rejected"], dtype=torch.float32)
    weights = torch.tensor([p.weight if cfg.use_weights else 1.0 for p in pairs], dtype=torch.float32)
    eps = torch.tensor(
        [max(cfg.label_smoothing, 1.0 - p.margin) if cfg.margin_as_confidence else cfg.label_smoothing for p in pairs],
        dtype=torch.float32,
    ).clamp(0.0, 0.49)
    lm = prepare_lm(load_lm(payload["model_dir"]), cfg)
    limit = int(getattr(lm.config, "max_position_embeddings", 0)) or None
    device = backend.device()
    configure_cuda(device)
    model = backend.prepare(SequenceScorer(lm).to(device))
    model.train()
    ref_model = None
    if not precomputed:  # the reference runs beside the policy, every step (TRL's default)
        ref_model = SequenceScorer(load_lm(payload["ref_model_dir"])).to(device).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    chosen_tokens = [len(_scored_positions(len(p.chosen), p.chosen_observed)) for p in pairs]
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    start = 0
    ckpt = backend.latest_checkpoint()
    if ckpt is not None:
        state = load_state(ckpt)
        unwrap(model).load_state_dict(state["model"], strict=not state.get("partial"))
        opt.load_state_dict(state["optimizer"])
        start, backend.attempt = int(state["step"]), int(state.get("attempt", 0)) + 1
        backend.emit({"type": "resumed", "from_step": start, "pid": os.getpid()})
    backend.emit(
        {"type": "started", "pid": os.getpid(), "world": backend.world, "start_step": start, "device": str(device)}
    )
    plan = step_plan(
        len(pairs), cfg.batch_size, cfg.epochs, cfg.max_steps, cfg.seed, min_batch=backend.world * cfg.grad_accum
    )
    rest = len(pairs) % cfg.batch_size
    steps_per_epoch = max(1, len(pairs) // cfg.batch_size + int(rest >= backend.world * cfg.grad_accum))
    metrics: dict[str, Any] = {}
    for step in range(start, len(plan)):
        t0 = time.perf_counter()
        idx = plan[step]
        wsum = float(weights[idx].sum())
        step_chosen = float(sum(chosen_tokens[i] for i in idx))
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.lr, cfg.warmup_steps, len(plan), cfg.lr_scheduler_type)
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
            if ref_model is not None:
                with torch.no_grad(), autocast(device, cfg.bf16):
                    ref_seq = ref_model(batch.chunks, batch.n_rows)["seq_logps"].float()
                rc, rr = ref_seq[:n], ref_seq[n:]
            else:
                rc, rr = ref_c[mb].to(device), ref_r[mb].to(device)
            with backend.no_sync(model, last_micro=m == len(micro) - 1):
                with autocast(device, cfg.bf16):
                    seq = model(batch.chunks, batch.n_rows)["seq_logps"].float()
                lengths = batch.response_lengths.to(seq.dtype)
                res = preference_loss(
                    seq[:n],
                    seq[n:],
                    rc,
                    rr,
                    beta=cfg.beta,
                    loss_type=cfg.loss_type,
                    label_smoothing=eps[mb].to(device),
                    chosen_lengths=lengths[:n],
                    rejected_lengths=lengths[n:],
                )
                w = weights[mb].to(device)
                # sum / (the whole step's weight) x world: DDP's gradient mean over workers then
                # gives exactly the weighted mean over all pairs of the step
                loss = (res.losses * w).sum() / wsum
                if cfg.rpo_alpha:  # RPO: NLL of the chosen responses, token mean over the step
                    loss = loss - cfg.rpo_alpha * seq[:n].sum() / max(step_chosen, 1.0)
                (loss * backend.world).backward()
            stats += _stats(res, cfg.beta, w, seq.detach(), torch.cat([rc, rr]), lengths, batch)
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
    """The micro-batch's sums (see _metrics) as one float64 CPU tensor: computed on the device and
    copied once (a float() per entry would wait for the GPU 11 times per micro-batch)."""
    import torch

    sums = [
        (res.losses.detach() * w).sum(),
        w.sum(),
        _correct(res.chosen_rewards, res.rejected_rewards, beta).sum(),
        (res.chosen_rewards - res.rejected_rewards).sum(),
        res.chosen_rewards.sum(),
        res.rejected_rewards.sum(),
        (ref - seq).sum(),
        lengths.sum(),
        seq[: len(w)].sum(),
        seq[len(w) :].sum(),
    ]
    s = torch.stack([x.detach().double() for x in sums]).cpu().tolist()
    return torch.tensor(
        [*s[:3], float(len(w)), *s[3:8], float(batch.real_tokens), float(batch.padded_tokens), *s[8:]],
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
        # TRL's names for the same quantities (rewards/accuracies counts ties as 1/2 here)
        "rewards/chosen": s[5] / n,
        "rewards/rejected": s[6] / n,
        "rewards/accuracies": s[2] / n,
        "rewards/margins": s[4] / n,
        "logps/chosen": s[11] / n,
        "logps/rejected": s[12] / n,
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
    *,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    rpo_alpha: float | None = None,
    chunk_tokens: int = 4096,
) -> dict[str, float]:
    """Preference metrics of ``model`` on ``pairs``: TRL's (``loss``, ``rewards/chosen``,
    ``rewards/rejected``, ``rewards/accuracies`` (strictly greater, as TRL), ``rewards/margins``,
    ``logps/chosen``, ``logps/rejected``) plus ``accuracy`` (ties count 1/2: before any training
    the policy is the reference, every margin is 0 and the accuracy is 0.5) and ``reward_margin``.
    """
    import torch

    from pipelines.training.losses import preference_loss
    from pipelines.training.sequences import _scored_positions, sequence_logps

    if not pairs:
        return {}
    limit = int(getattr(model.config, "max_position_embeddings", 0)) or None
    model.eval()
    logps = sequence_logps(
        model,
        [p.chosen_row() for p in pairs] + [p.rejected_row() for p in pairs],
        pad_id,
        limit=limit,
        chunk_tokens=chunk_tokens,
    )
    n = len(pairs)
    lc = torch.tensor([len(_scored_positions(len(p.chosen), p.chosen_observed)) for p in pairs], dtype=torch.float64)
    lr = torch.tensor(
        [len(_scored_positions(len(p.rejected), p.rejected_observed)) for p in pairs], dtype=torch.float64
    )
    res = preference_loss(
        logps[:n],
        logps[n:],
        torch.tensor(ref_chosen, dtype=torch.float64),
        torch.tensor(ref_rejected, dtype=torch.float64),
        beta=beta,
        loss_type=loss_type,  # type: ignore[arg-type]
        label_smoothing=label_smoothing,
        chosen_lengths=lc,
        rejected_lengths=lr,
    )
    loss = res.losses.mean()
    if rpo_alpha:
        loss = loss - rpo_alpha * logps[:n].sum() / lc.sum()
    chosen, rejected = res.chosen_rewards, res.rejected_rewards
    return {
        "loss": float(loss),
        "rewards/chosen": float(chosen.mean()),
        "rewards/rejected": float(rejected.mean()),
        "rewards/accuracies": float((chosen > rejected).double().mean()),
        "rewards/margins": float((chosen - rejected).mean()),
        "logps/chosen": float(logps[:n].mean()),
        "logps/rejected": float(logps[n:].mean()),
        "accuracy": float(_correct(chosen, rejected, beta).mean()),
        "reward_margin": float((chosen - rejected).mean()),
        "pairs": n,
    }
