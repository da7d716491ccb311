"""Online RL for the speech policy: ``PPOConfig`` and the learner that runs PPO or GRPO updates.

One round = rollouts of the current policy (the rollout job, into the store) -> scores by the
configured scorers (the scoring job, into the store) -> one reward per rollout from the reward
composition -> ``RLLearner.update``. ``pipelines.training.rl_job.run_rl`` drives the rounds; the
learner lives in the driver process (``num_workers=0``) or in a Ray actor, GPU-ready.

PPO (``algorithm="ppo"``): per-token reward = -kl_coef * KL_t plus the sequence reward on the last
token, values from a linear value head on the policy's last hidden state, GAE advantages
(whitened), clipped surrogate + clipped value loss. GRPO (``algorithm="grpo"``): K samples per
prompt, group-relative advantages, no value head, k3 KL to the reference as a loss term.
Log-probs are taken at the sampling temperature, so the ratio compares the same distributions
that produced the samples.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field


def _default_scorers() -> list[dict[str, Any]]:
    return [{"name": "prosody", "config": {}}]


class PPOConfig(BaseModel):
    """One online RL run (PPO or GRPO); stored verbatim on its training run row."""

    algorithm: Literal["ppo", "grpo"] = Field(
        "grpo", description="ppo: value head + GAE; grpo: group-relative, no critic"
    )
    policy: str = Field(description="registered policy to start from (and the KL reference)")
    policy_version: int | None = Field(None, description="its version; latest when unset")
    split: str | None = Field("train", description="training prompts: this split ...")
    prompt_ids: list[str] | None = Field(None, description="... or these external ids")
    heldout_split: str | None = Field("heldout", description="evaluation prompts: this split ...")
    heldout_prompt_ids: list[str] | None = Field(None, description="... or these external ids")
    regime: str | None = Field(None, description="only prompts of this regime")
    scorers: list[dict[str, Any]] = Field(
        default_factory=_default_scorers, description="scoring-job specs [{name, config}] whose scores make the reward"
    )
    composition: dict[str, Any] | None = Field(
        None, description="RewardComposition as JSON; the default weights when unset"
    )
    rounds: int = Field(3, ge=1, le=1000)
    samples: int = Field(4, ge=1, le=64, description="K rollouts per prompt per round (GRPO's group size)")
    eval_samples: int = Field(
        2, ge=1, le=64, description="rollouts per held-out prompt for the before/after evaluation"
    )
    temperature: float = Field(1.0, gt=0, le=5, description="sampling temperature (log-probs use the same)")
    top_p: float = Field(
        1.0, gt=0, le=1, description="keep 1.0: truncated sampling is not the policy PPO differentiates"
    )
    max_new_tokens: int = Field(64, ge=1, le=4096)
    lr: float = Field(2e-4, gt=0)
    value_lr: float = Field(1e-3, gt=0, description="PPO value head learning rate")
    epochs: int = Field(2, ge=1, le=100, description="passes over each round's rollouts")
    minibatch_size: int = Field(24, ge=1, description="sequences per optimizer step")
    clip_eps: float = Field(0.2, gt=0, lt=1)
    value_clip: float | None = Field(0.2, description="PPO2 value clipping (None: off)")
    vf_coef: float = Field(0.5, ge=0)
    kl_coef: float = Field(0.05, ge=0, description="PPO: per-token KL penalty in the reward; GRPO: KL loss weight")
    gamma: float = Field(1.0, gt=0, le=1)
    lam: float = Field(0.95, ge=0, le=1)
    grpo_scale: bool = Field(True, description="divide group-centred rewards by the group std (False: Dr. GRPO)")
    max_grad_norm: float = Field(1.0, gt=0)
    num_workers: int = Field(0, ge=0, le=1, description="0: learner, rollouts and scoring in this process; 1: on Ray")
    use_gpu: bool = Field(False, description="learner actor on one GPU")
    rollout_actors: int = Field(1, ge=1, le=256)
    scoring_actors: int = Field(1, ge=1, le=256)
    rollout_batch_size: int = Field(8, ge=1, le=1024, description="trajectories per rollout-actor call")
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch threads of the learner (and in-process "
        "sampling); default: all cores in-process, learner_cpus on Ray",
    )
    learner_cpus: float = Field(
        1.0, ge=0, description="Ray CPUs reserved by the learner actor (it idles while rollouts run)"
    )
    seed: int = 0
    output_name: str | None = Field(None, description="registered name of the result; default: the base policy's")


class RLLearner:
    """Policy (+ value head for PPO), frozen reference and optimizer; plain Python, also a Ray actor."""

    def __init__(self, model_dir: str, cfg: dict[str, Any], pad_id: int, state: dict[str, Any] | None = None) -> None:
        import torch

        from pipelines.training.sequences import SequenceScorer
        from pipelines.training.worker import configure_cuda, default_threads, load_lm, make_optimizer, set_threads

        self.cfg = PPOConfig(**cfg)
        set_threads(default_threads(self.cfg.threads, self.cfg.num_workers == 0, self.cfg.learner_cpus))
        torch.manual_seed(self.cfg.seed)
        self.device = torch.device("cuda" if self.cfg.use_gpu and torch.cuda.is_available() else "cpu")
        configure_cuda(self.device)
        self.pad_id = pad_id
        lm = load_lm(model_dir)
        self.limit = int(getattr(lm.config, "max_position_embeddings", 0)) or None
        self.model = SequenceScorer(lm, value_head=self.cfg.algorithm == "ppo", temperature=self.cfg.temperature)
        self.model.to(self.device)
        self.ref = SequenceScorer(load_lm(model_dir), temperature=self.cfg.temperature).to(self.device).eval()
        for p in self.ref.parameters():
            p.requires_grad_(False)
        self.opt = make_optimizer(self.model.lm, self.cfg.lr, 0.0)
        if self.model.value_head is not None:
            self.opt.add_param_group({"params": list(self.model.value_head.parameters()), "lr": self.cfg.value_lr})
        self.step = 0
        if state:  # re-created after a failure: continue from the last round's weights and optimizer
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["optimizer"])
            self.step = int(state["step"])

    # -- one round -----------------------------------------------------------------------------
    def update(
        self, prompts: list[list[int]], responses: list[list[int]], rewards: list[float], groups: list[int], round: int
    ) -> list[dict[str, Any]]:
        """PPO/GRPO epochs over one round's rollouts; returns one metrics dict per optimizer step."""
        import random

        import torch

        from pipelines.training import losses as L
        from pipelines.training.sequences import pack, to_padded

        cfg, n = self.cfg, len(responses)
        rows = list(zip(prompts, responses))
        scores = torch.tensor(rewards, dtype=torch.float32, device=self.device)
        with torch.no_grad():
            old = self._token_tensors(self.model, rows)
            ref = self._token_tensors(self.ref, rows)
        mask = old["mask"]
        kl_tok = (old["logps"] - ref["logps"]) * mask  # k1 per token under the sampling policy
        if cfg.algorithm == "ppo":
            rewards_t = L.token_rewards(scores, kl_tok, mask, cfg.kl_coef)
            adv, returns = L.gae(rewards_t, old["values"], mask, cfg.gamma, cfg.lam)
            adv = L.masked_whiten(adv, mask)
        else:
            seq_adv = L.grpo_advantages(scores, torch.tensor(groups, device=self.device), scale=cfg.grpo_scale)
            adv, returns = seq_adv.unsqueeze(1).expand_as(mask).clone() * mask, None
        rng = random.Random(cfg.seed * 7919 + round)
        out: list[dict[str, Any]] = []
        self.model.train()
        for epoch in range(cfg.epochs):
            order = list(range(n))
            rng.shuffle(order)
            for s in range(0, n, cfg.minibatch_size):
                t0 = time.perf_counter()
                idx = order[s : s + cfg.minibatch_size]
                batch = pack([rows[i] for i in idx], self.pad_id, limit=self.limit).to(self.device)
                res = self.model(batch.chunks, batch.n_rows)
                width = mask.shape[1]
                logps, m = to_padded(res["token_logps"], res["row"], res["token_index"], len(idx), width)
                sel = torch.tensor(idx, device=self.device)
                m = m & mask[sel]
                metrics: dict[str, Any] = {"round": round, "epoch": epoch}
                if cfg.algorithm == "ppo":
                    values, _ = to_padded(res["values"], res["row"], res["token_index"], len(idx), width)
                    pol = L.ppo_policy_loss(logps, old["logps"][sel], adv[sel], m, cfg.clip_eps)
                    vloss = L.value_loss(values, old["values"][sel], returns[sel], m, cfg.value_clip)
                    loss = pol.loss + cfg.vf_coef * vloss
                    metrics["value_loss"] = float(vloss.detach())
                    kl_now = L.masked_mean(L.kl_estimate(logps.detach(), ref["logps"][sel], "k3"), m)
                else:
                    loss, pol, kl_now = L.grpo_loss(
                        logps, old["logps"][sel], ref["logps"][sel], seq_adv[sel], m, cfg.clip_eps, cfg.kl_coef
                    )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.opt.step()
                self.step += 1
                dt = time.perf_counter() - t0
                metrics.update(
                    step=self.step,
                    loss=float(loss.detach()),
                    policy_loss=float(pol.loss.detach()),
                    clip_fraction=float(pol.clip_fraction),
                    approx_kl=float(pol.approx_kl),
                    kl=float(kl_now),
                    grad_norm=float(grad_norm),
                    tokens=batch.real_tokens,
                    tokens_per_s=batch.real_tokens / dt if dt > 0 else 0.0,
                    seconds=dt,
                )
                out.append(metrics)
        seq_kl = (kl_tok.sum(1)).mean()
        for m_ in out:  # the round's reward and sampling-policy KL ride on every step row
            m_.update(
                reward_mean=float(scores.mean()),
                reward_std=float(scores.std()) if n > 1 else 0.0,
                kl_seq_k1=float(seq_kl),
                samples=n,
            )
        return out

    def _token_tensors(self, scorer: Any, rows: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
        """Padded [N, T] token log-probs (and values) of rows, in row order, on the learner's device."""
        import torch

        from pipelines.training.sequences import pack, to_padded

        width = max(len(r) for _, r in rows)
        logps_all, mask_all, values_all = [], [], []
        for s in range(0, len(rows), 64):
            part = rows[s : s + 64]
            batch = pack(part, self.pad_id, limit=self.limit).to(self.device)
            res = scorer(batch.chunks, batch.n_rows)
            lp, m = to_padded(res["token_logps"], res["row"], res["token_index"], len(part), width)
            logps_all.append(lp.float())
            mask_all.append(m)
            if "values" in res:
                values_all.append(to_padded(res["values"], res["row"], res["token_index"], len(part), width)[0])
        out = {"logps": torch.cat(logps_all), "mask": torch.cat(mask_all)}
        out["values"] = torch.cat(values_all) if values_all else torch.zeros_like(out["logps"])
        return out

    def kl_to_reference(self, prompts: list[list[int]], responses: list[list[int]]) -> dict[str, float]:
        """KL(pi || ref) on samples of pi: per token (k1, k3) and per sequence (k1 summed)."""
        import torch

        from pipelines.training import losses as L

        rows = list(zip(prompts, responses))
        with torch.no_grad():
            self.model.eval()
            cur, ref = self._token_tensors(self.model, rows), self._token_tensors(self.ref, rows)
        m = cur["mask"]
        return {
            "kl_k1_per_token": float(L.masked_mean(L.kl_estimate(cur["logps"], ref["logps"], "k1"), m)),
            "kl_k3_per_token": float(L.masked_mean(L.kl_estimate(cur["logps"], ref["logps"], "k3"), m)),
            "kl_k1_per_sequence": float(((cur["logps"] - ref["logps"]) * m).sum(1).mean()),
        }

    # -- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights (``lm.*``, ``value_head.*``), optimizer and step, on CPU: enough to re-create the learner."""
        import torch

        def cpu(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.detach().cpu()
            if isinstance(x, dict):
                return {k: cpu(v) for k, v in x.items()}
            if isinstance(x, list):
                return [cpu(v) for v in x]
            return x

        return {"model": cpu(self.model.state_dict()), "optimizer": cpu(self.opt.state_dict()), "step": self.step}

    def ping(self) -> int:
        import os

        return os.getpid()
