"""Training losses, torch only: preference optimisation (DPO, cDPO, IPO) and on-policy RL (PPO, GRPO).

Every function takes plain tensors (sequence or token log-probabilities, masks, rewards) so the
maths can be checked on tiny tensors without a model; the workers in this package feed them.

Conventions: ``*_logps`` are summed log-probabilities of a whole response (response tokens only);
token-level tensors are ``[B, T]`` with a 0/1 ``mask`` marking real response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

PreferenceLossType = Literal["sigmoid", "ipo", "hinge", "robust"]
KLEstimator = Literal["k1", "k2", "k3"]


# ---- preference losses ---------------------------------------------------------------------------
@dataclass
class PreferenceLoss:
    """Per-pair losses and the implicit rewards they imply; metrics are detached."""

    losses: torch.Tensor  # [B], differentiable
    chosen_rewards: torch.Tensor  # [B], beta * (log pi(y_w|x) - log ref(y_w|x))
    rejected_rewards: torch.Tensor  # [B]

    @property
    def reward_margin(self) -> torch.Tensor:
        return (self.chosen_rewards - self.rejected_rewards).mean()

    @property
    def accuracy(self) -> torch.Tensor:
        return (self.chosen_rewards > self.rejected_rewards).float().mean()

    def loss(self, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean over pairs (plain mean without weights, as TRL's DPOTrainer reduces)."""
        if weights is None:
            return self.losses.mean()
        return (self.losses * weights).sum() / weights.sum()


def preference_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    *,
    beta: float = 0.1,
    loss_type: PreferenceLossType = "sigmoid",
    label_smoothing: float | torch.Tensor = 0.0,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> PreferenceLoss:
    """DPO-family loss on summed response log-probs under the policy and the frozen reference.

    ``sigmoid`` -- DPO, Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model
    is Secretly a Reward Model" (arXiv:2305.18290), eq. 7::

        L = -log sigmoid(beta * h),   h = [log pi(y_w) - log ref(y_w)] - [log pi(y_l) - log ref(y_l)]

    With ``label_smoothing`` eps > 0 it is conservative DPO (cDPO; E. Mitchell 2023, "A note on DPO
    with noisy preferences & relationship to IPO"): the label is assumed flipped with probability
    eps, so L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). Its minimum sits at a
    finite margin (h* = log((1 - eps)/eps) / beta) instead of pushing h to infinity. ``eps`` may be a
    per-pair tensor (e.g. from a label's confidence).

    ``ipo`` -- IPO, Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences" (arXiv:2310.12036), eq. 17: L = (h - 1/(2 beta))^2, a squared loss whose
    minimum is a finite margin of 1/(2 beta), so it does not overfit deterministic preferences.
    Given ``chosen_lengths``/``rejected_lengths`` each log-ratio is divided by its response length
    first (per-token average), the normalisation TRL's ``DPOTrainer`` uses and that its authors
    confirmed with the IPO authors; without lengths the sequence sums are used as in the paper.

    ``hinge`` -- SLiC-HF, Zhao et al. 2023 (arXiv:2305.10425): L = max(0, 1 - beta * h).

    ``robust`` -- rDPO, Chowdhury et al. 2024, "Provably Robust DPO" (arXiv:2403.00409), eq. 8: an
    unbiased loss under label flips with rate eps:
    L = [(1 - eps) * -log sigmoid(beta h) - eps * -log sigmoid(-beta h)] / (1 - 2 eps).
    """
    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    if loss_type == "sigmoid":
        h = chosen_logratios - rejected_logratios
        eps = label_smoothing
        losses = -F.logsigmoid(beta * h)
        if not (isinstance(eps, float | int) and eps == 0):
            losses = losses * (1 - eps) - F.logsigmoid(-beta * h) * eps
    elif loss_type == "ipo":
        if (chosen_lengths is None) != (rejected_lengths is None):
            raise ValueError("pass both chosen_lengths and rejected_lengths (per-token IPO) or neither (paper form)")
        if chosen_lengths is not None:
            h = chosen_logratios / chosen_lengths.clamp(min=1) - rejected_logratios / rejected_lengths.clamp(min=1)
        else:
            h = chosen_logratios - rejected_logratios
        losses = (h - 1 / (2 * beta)) ** 2
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * (chosen_logratios - rejected_logratios))
    elif loss_type == "robust":
        h = chosen_logratios - rejected_logratios
        eps = label_smoothing
        losses = (-(1 - eps) * F.logsigmoid(beta * h) + eps * F.logsigmoid(-beta * h)) / (1 - 2 * eps)
    else:
        raise ValueError(f"loss_type {loss_type!r} is unknown; use sigmoid (DPO/cDPO), ipo, hinge or robust")
    return PreferenceLoss(losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach())


# ---- token-level helpers --------------------------------------------------------------------------
def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise to unit variance over the masked entries (PPO advantage normalisation)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, kind: KLEstimator = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || ref) from samples of pi (J. Schulman 2020, "Approximating KL
    Divergence", http://joschu.net/blog/kl-approx.html), with r = ref/pi:

    k1 = -log r (unbiased, high variance, can be negative per sample); k2 = (log r)^2 / 2 (biased,
    low variance); k3 = (r - 1) - log r (unbiased, always >= 0; GRPO's penalty, Shao et al. 2024).
    """
    log_r = ref_logps - logps
    if kind == "k1":
        return -log_r
    if kind == "k2":
        return 0.5 * log_r**2
    if kind == "k3":
        return torch.expm1(log_r) - log_r
    raise ValueError(f"KL estimator {kind!r} is unknown; use k1, k2 or k3")


# ---- PPO ----------------------------------------------------------------------------------------
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438) over response tokens.

    ``rewards``/``values``/``mask`` are ``[B, T]``; masked-out tokens (right padding) are treated as
    terminal, so the value after a response's last token is 0. Returns (advantages, returns).
    """
    mask = mask.to(values.dtype)
    values = values * mask
    adv = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    T = values.shape[1]
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token reward of RLHF-PPO (Ziegler et al. 2019, arXiv:1909.08593; Ouyang et al. 2022):
    -kl_coef * KL_t on every response token, plus the sequence score on its last token."""
    mask = mask.to(kl.dtype)
    r = -kl_coef * kl * mask
    last = (mask.cumsum(1) == mask.sum(1, keepdim=True)) & (mask > 0)
    return r + last.to(r.dtype) * scores.unsqueeze(1)


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor
    clip_fraction: torch.Tensor  # share of tokens whose ratio was clipped (detached)
    approx_kl: torch.Tensor  # k3 estimate of KL(old || new) on these tokens (detached)


def ppo_policy_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2
) -> PolicyLossOutput:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347, eq. 7), token-mean over the mask:
    L = -E[min(rho A, clip(rho, 1 - eps, 1 + eps) A)], rho = pi / pi_old."""
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages
    loss = -masked_mean(torch.minimum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1).abs() > clip_eps).float(), mask)
        approx_kl = masked_mean(torch.expm1(-log_ratio) + log_ratio, mask)
    return PolicyLossOutput(loss, clip_fraction, approx_kl)


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float | None = 0.2,
) -> torch.Tensor:
    """Value regression, with PPO2's clipping of the update around the old value (baselines ppo2):
    0.5 * max((V - R)^2, (clip(V, V_old +- eps) - R)^2)."""
    err = (values - returns) ** 2
    if clip_eps is not None:
        clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
        err = torch.maximum(err, (clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


# ---- GRPO ---------------------------------------------------------------------------------------
def grpo_advantages(
    rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages of GRPO (Shao et al. 2024, "DeepSeekMath", arXiv:2402.03300, sec. 4.1.2):
    each of the K samples of a prompt is scored against its own group, A_i = (r_i - mean_g) / std_g,
    so no value model is needed. ``scale=False`` keeps only the mean baseline (Dr. GRPO, Liu et al.
    2025, arXiv:2503.20783, which argues the std division biases towards easy prompts).

    A group whose rewards are all equal gets advantage 0: it carries no signal, not noise.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must be 1-D of equal length, got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    counts = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, inverse, torch.ones_like(rewards))
    sums = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, inverse, rewards)
    mean = sums / counts
    centered = rewards - mean[inverse]
    if not scale:
        return centered
    sq = torch.zeros(n_groups, dtype=rewards.dtype).index_add_(0, inverse, centered**2)
    # Unbiased std as in the paper's reference code; a singleton group has no spread at all.
    std = torch.sqrt(sq / (counts - 1).clamp(min=1))
    return centered / (std[inverse] + eps)


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    ref_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    kl_coef: float = 0.04,
) -> tuple[torch.Tensor, PolicyLossOutput, torch.Tensor]:
    """GRPO objective (DeepSeekMath eq. 3): the clipped surrogate with one advantage per sequence
    broadcast over its tokens, plus kl_coef * k3 KL to the reference as a loss term (not folded
    into the reward as PPO does). Returns (loss, policy part, mean KL)."""
    adv = advantages.unsqueeze(1).expand_as(logps)
    pol = ppo_policy_loss(logps, old_logps, adv, mask, clip_eps)
    kl = masked_mean(kl_estimate(logps, ref_logps, "k3"), mask)
    return pol.loss + kl_coef * kl, pol, kl.detach()
