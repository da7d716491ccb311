"""Tiny-tensor invariants of the training losses (no model, milliseconds)."""

from __future__ import annotations

import math

import pytest
import torch

from pipelines.training import losses as L


def _pair(h: float, beta: float = 0.1, **kw):
    pc = torch.tensor([h], requires_grad=True)
    out = L.preference_loss(pc, torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), beta=beta, **kw)
    return out, pc


def test_dpo_is_log2_at_zero_margin_and_rewards_are_beta_logratios() -> None:
    logps = torch.tensor([-5.0, -7.0])
    out = L.preference_loss(logps, logps - 1, logps, logps - 1, beta=0.3)  # policy == reference
    assert torch.allclose(out.losses, torch.full((2,), math.log(2)))
    assert out.reward_margin.item() == 0 and out.accuracy.item() == 0
    out = L.preference_loss(
        torch.tensor([-4.0]), torch.tensor([-9.0]), torch.tensor([-5.0]), torch.tensor([-7.0]), beta=0.5
    )
    assert out.chosen_rewards.item() == pytest.approx(0.5) and out.rejected_rewards.item() == pytest.approx(-1.0)
    assert out.reward_margin.item() == pytest.approx(1.5) and out.accuracy.item() == 1.0


def test_dpo_is_symmetric_and_its_gradient_raises_the_chosen() -> None:
    up, pc = _pair(2.0)
    down, _ = _pair(-2.0)
    # swapping chosen and rejected: L(h) + L(-h) = softplus(-bh) + softplus(bh); L(h) = -log sigmoid(bh)
    assert up.losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.2))))
    assert down.losses.item() == pytest.approx(-math.log(1 / (1 + math.exp(0.2))))
    assert up.losses.item() < math.log(2) < down.losses.item()
    up.loss().backward()
    assert pc.grad.item() < 0  # descending the loss raises log pi(chosen)
    # and the gradient is -beta * sigmoid(-beta h), DPO's weighting of wrongly ordered pairs
    assert pc.grad.item() == pytest.approx(-0.1 / (1 + math.exp(0.2)))


def test_cdpo_label_smoothing_has_a_finite_optimum() -> None:
    eps, beta = 0.1, 0.5
    h_star = math.log((1 - eps) / eps) / beta
    losses = {h: _pair(h, beta, label_smoothing=eps)[0].losses.item() for h in (h_star - 1, h_star, h_star + 1)}
    assert losses[h_star] < losses[h_star - 1] and losses[h_star] < losses[h_star + 1]
    out, pc = _pair(h_star, beta, label_smoothing=eps)
    out.loss().backward()
    assert abs(pc.grad.item()) < 1e-6
    # eps = 0 is plain DPO; a per-pair eps tensor works too
    assert _pair(1.0, label_smoothing=0.0)[0].losses.item() == pytest.approx(_pair(1.0)[0].losses.item())
    t = L.preference_loss(
        torch.tensor([1.0, 1.0]),
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        label_smoothing=torch.tensor([0.0, 0.5]),
    )
    assert t.losses[0].item() == pytest.approx(_pair(1.0)[0].losses.item())
    assert t.losses[1].item() == pytest.approx(
        0.5 * (-math.log(1 / (1 + math.exp(-0.1))) - math.log(1 / (1 + math.exp(0.1))))
    )


def test_ipo_minimum_is_at_margin_one_over_two_beta() -> None:
    beta = 0.25
    target = 1 / (2 * beta)
    out, pc = _pair(target, beta, loss_type="ipo")
    assert out.losses.item() == pytest.approx(0.0)
    out.loss().backward()
    assert pc.grad.item() == pytest.approx(0.0)
    assert _pair(target + 0.5, beta, loss_type="ipo")[0].losses.item() == pytest.approx(0.25)
    below, pc2 = _pair(0.0, beta, loss_type="ipo")
    below.loss().backward()
    assert pc2.grad.item() < 0  # below the target margin: push the chosen up
    # per-token form: log-ratios divided by the response lengths first
    out = L.preference_loss(
        torch.tensor([target * 4]),
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        torch.tensor([0.0]),
        beta=beta,
        loss_type="ipo",
        chosen_lengths=torch.tensor([4]),
        rejected_lengths=torch.tensor([9]),
    )
    assert out.losses.item() == pytest.approx(0.0)


def test_weighted_loss_and_unknown_type() -> None:
    out = L.preference_loss(torch.tensor([1.0, -1.0]), torch.zeros(2), torch.zeros(2), torch.zeros(2))
    w = torch.tensor([3.0, 1.0])
    assert out.loss(w).item() == pytest.approx((3 * out.losses[0] + out.losses[1]).item() / 4)
    with pytest.raises(ValueError, match="sigmoid"):
        L.preference_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), loss_type="kto")


def test_hinge_and_robust_losses() -> None:
    h = torch.tensor([2.0, -3.0])
    z = torch.zeros(2)
    hinge = L.preference_loss(h, z, z, z, beta=0.5, loss_type="hinge").losses
    assert hinge.tolist() == pytest.approx([0.0, 2.5])  # max(0, 1 - beta h)
    # robust DPO at eps = 0 is plain DPO; at eps > 0 it is unbiased: E over a flip of rate eps = DPO loss
    dpo = L.preference_loss(h, z, z, z, loss_type="sigmoid").losses
    assert L.preference_loss(h, z, z, z, loss_type="robust").losses.tolist() == pytest.approx(dpo.tolist())
    eps = 0.2
    rob = L.preference_loss(h, z, z, z, loss_type="robust", label_smoothing=eps).losses
    flipped = L.preference_loss(-h, z, z, z, loss_type="robust", label_smoothing=eps).losses
    assert ((1 - eps) * rob + eps * flipped).tolist() == pytest.approx(dpo.tolist(), rel=1e-5)


def test_kl_estimators() -> None:
    logp = torch.log(torch.tensor([0.5, 0.2, 0.3]))
    ref = torch.log(torch.tensor([0.3, 0.3, 0.4]))
    exact = (logp.exp() * (logp - ref)).sum()
    # sampled from pi, the k1 and k3 estimators are unbiased: their pi-weighted means equal the KL
    for kind in ("k1", "k3"):
        assert (logp.exp() * L.kl_estimate(logp, ref, kind)).sum().item() == pytest.approx(exact.item(), rel=1e-5)
    assert (L.kl_estimate(logp, ref, "k3") >= 0).all() and (L.kl_estimate(logp, ref, "k2") >= 0).all()
    assert L.kl_estimate(logp, logp, "k3").abs().max().item() == 0


def test_gae_matches_a_hand_computed_example_and_respects_the_mask() -> None:
    r = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    v = torch.tensor([[0.5, 0.4, 0.3, 9.9]])  # the 4th token is padding: its value must not leak in
    m = torch.tensor([[1, 1, 1, 0]])
    adv, ret = L.gae(r, v, m, gamma=1.0, lam=0.5)
    d2 = 1.0 - 0.3
    d1 = 0.0 + 0.3 - 0.4
    d0 = 0.0 + 0.4 - 0.5
    a2, a1 = d2, d1 + 0.5 * d2
    a0 = d0 + 0.5 * a1
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, 0.0]]))
    assert torch.allclose(ret[0, :3], adv[0, :3] + v[0, :3])
    # lam = 1, gamma = 1: advantage = return-to-go minus value (Monte Carlo)
    adv1, _ = L.gae(r, v, m, gamma=1.0, lam=1.0)
    assert torch.allclose(adv1[0, :3], torch.tensor([0.5, 0.6, 0.7]))


def test_token_rewards_put_the_score_on_the_last_real_token() -> None:
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    kl = torch.ones(2, 4)
    r = L.token_rewards(torch.tensor([2.0, 5.0]), kl, m, kl_coef=0.1)
    assert torch.allclose(r, torch.tensor([[-0.1, -0.1, 1.9, 0.0], [4.9, 0.0, 0.0, 0.0]]))


def test_ppo_clipped_objective() -> None:
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    m = torch.ones(1, 3)
    new = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    out = L.ppo_policy_loss(new, old, adv, m, clip_eps=0.2)
    assert out.loss.item() == pytest.approx(-1 / 3) and out.clip_fraction.item() == 0
    # a ratio far above 1 + eps with a positive advantage is clipped: no gradient through it
    new = torch.tensor([[1.0, 0.0, 0.0]], requires_grad=True)
    out = L.ppo_policy_loss(new, old, adv, m, clip_eps=0.2)
    out.loss.backward()
    assert new.grad[0, 0].item() == 0 and out.clip_fraction.item() == pytest.approx(1 / 3)
    assert out.approx_kl.item() > 0
    # ... but with a negative advantage the pessimistic (unclipped) branch keeps the gradient
    new = torch.tensor([[0.0, 1.0, 0.0]], requires_grad=True)
    L.ppo_policy_loss(new, old, adv, m, clip_eps=0.2).loss.backward()
    assert new.grad[0, 1].item() > 0


def test_value_loss_clipping() -> None:
    m = torch.ones(1, 1)
    assert L.value_loss(torch.tensor([[1.0]]), torch.tensor([[1.0]]), torch.tensor([[3.0]]), m).item() == pytest.approx(
        2.0
    )
    # moving far past the clip range towards the return is not rewarded beyond the clipped value
    v = torch.tensor([[2.9]], requires_grad=True)
    loss = L.value_loss(v, torch.tensor([[1.0]]), torch.tensor([[3.0]]), m, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.5 * (3.0 - 1.2) ** 2)


def test_grpo_advantages_are_group_relative() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 2.0, 2.0, 3.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv = L.grpo_advantages(rewards, groups)
    for g in (0, 1):
        a = adv[groups == g]
        assert a.sum().abs().item() < 1e-5 and a.std().item() == pytest.approx(1.0, rel=1e-4)
    assert adv[0] > adv[2] > adv[1]
    # shifting or scaling one group's rewards leaves its advantages unchanged
    adv2 = L.grpo_advantages(torch.cat([rewards[:4] * 10 + 3, rewards[4:]]), groups)
    assert torch.allclose(adv, adv2, atol=1e-5)
    # equal rewards carry no signal; without scaling only the mean is removed
    assert L.grpo_advantages(torch.ones(3), torch.zeros(3)).abs().max().item() == 0
    assert torch.allclose(L.grpo_advantages(rewards, groups, scale=False)[:4], torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_grpo_loss_gradient_follows_the_advantage() -> None:
    logps = torch.zeros(2, 2, requires_grad=True)
    old = torch.zeros(2, 2)
    adv = torch.tensor([1.0, -1.0])
    loss, _pol, kl = L.grpo_loss(logps, old, old, adv, torch.ones(2, 2), kl_coef=0.1)
    loss.backward()
    assert kl.item() == 0 and (logps.grad[0] < 0).all() and (logps.grad[1] > 0).all()
