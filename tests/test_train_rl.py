"""Online GRPO/PPO on the offline policy: the acoustic prosody reward on held-out prompts goes up, KL stays small.

The reward is the ``prosody`` scorer's ``prosody_match`` (pitch and speaking rate measured on the
rendered audio against the persona's targets). The policy moves it through the rate/pitch control
tokens it emits, so a short run can raise it; everything lands in the store (rollouts, scores,
round policies, the run row).
"""

from __future__ import annotations

import pytest

from earmark.services.training import TrainingService
from pipelines.training.ppo import PPOConfig
from pipelines.training.rl_job import EVAL_ROUND, run_rl

PER_PERSONA = 2
HELDOUT_PER_PERSONA = 2


def seed_starter(em, checkpoint):
    from pipelines import starter

    em.catalog.import_personas(starter.persona_records())
    per: dict[tuple[str, str], int] = {}
    chosen = []
    for r in starter.prompt_records():
        key = (r["persona"], r["split"])
        cap = PER_PERSONA if r["split"] == "train" else HELDOUT_PER_PERSONA
        if len(r["messages"]) == 1 and r["messages"][0]["role"] == "user" and per.get(key, 0) < cap:
            per[key] = per.get(key, 0) + 1
            chosen.append(r)
    em.catalog.import_prompts(chosen)
    return em.catalog.register_policy("offline-speech", checkpoint.as_uri(), kind="offline")


def _report(em, res, label: str) -> dict:
    run = TrainingService(em.ctx).get(res.run_id)
    s = run.summary
    rounds = sorted({m["round"] for m in run.metrics})
    per_round = [next(m["reward_mean"] for m in run.metrics if m["round"] == r) for r in rounds]
    print(
        f"\n{label}: held-out prosody reward {s['heldout_reward_before']:.3f} -> {s['heldout_reward_after']:.3f} "
        f"({s['heldout_prompts']} prompts); train reward per round {[round(x, 3) for x in per_round]}; "
        f"KL(pi||ref) on held-out samples {s['heldout_kl']['kl_k3_per_token']:.4f}/token (k3), "
        f"{s['heldout_kl']['kl_k1_per_sequence']:.3f}/sequence (k1); {s['seconds']:.0f}s"
    )
    timing = [
        {k: round(next(m[k] for m in run.metrics if m["round"] == r), 1) for k in ("rollout_s", "score_s", "update_s")}
        for r in rounds
    ]
    print(f"  per-round seconds: {timing}")
    return {"run": run, "per_round": per_round}


@pytest.mark.slow
def test_grpo_in_process_raises_heldout_prosody_reward(em, checkpoint) -> None:
    base = seed_starter(em, checkpoint)
    cfg = PPOConfig(
        algorithm="grpo",
        policy=base.name,
        rounds=3,
        samples=4,
        lr=2e-4,
        epochs=2,
        minibatch_size=16,
        kl_coef=0.05,
        max_new_tokens=48,
        threads=1,
        seed=1,
    )
    res = run_rl(em, cfg, progress=False)
    info = _report(em, res, "GRPO in-process")
    run, s = info["run"], info["run"].summary
    assert run.status == "succeeded" and run.algorithm == "grpo"
    assert s["heldout_reward_after"] > s["heldout_reward_before"] + 0.03
    assert 0 <= s["heldout_kl"]["kl_k3_per_token"] < 0.1
    # the run's rollouts and scores are in the store like any other: round policies v0..v3, eval rollouts
    round_policies = [p for p in em.catalog.policies() if p.name == s["round_policy"]]
    assert [p.version for p in round_policies] == [0, 1, 2, 3] and all(
        p.training_run_id == run.id for p in round_policies
    )
    for p in round_policies[:3]:
        assert len(em.rollouts.list(policy_id=p.id, round=p.version + 1)) == s["train_prompts"] * cfg.samples
    assert len(em.rollouts.list(policy_id=res.policy.id, round=EVAL_ROUND)) == s["heldout_prompts"] * cfg.eval_samples
    assert res.policy.name == base.name and res.policy.version == 1 and res.policy.parent_id == base.id


@pytest.mark.slow
def test_ppo_in_process_value_head_and_gae(em, checkpoint) -> None:
    base = seed_starter(em, checkpoint)
    cfg = PPOConfig(
        algorithm="ppo",
        policy=base.name,
        rounds=3,
        samples=4,
        lr=1e-4,
        epochs=2,
        minibatch_size=16,
        kl_coef=0.05,
        max_new_tokens=48,
        threads=1,
        seed=1,
    )
    res = run_rl(em, cfg, progress=False)
    info = _report(em, res, "PPO in-process")
    run, s = info["run"], info["run"].summary
    assert run.status == "succeeded" and run.algorithm == "ppo"
    # the critic learns: its loss falls from the first round to the last
    first = [m["value_loss"] for m in run.metrics if m["round"] == 1]
    last = [m["value_loss"] for m in run.metrics if m["round"] == cfg.rounds]
    assert sum(last) / len(last) < sum(first) / len(first)
    assert 0 <= s["heldout_kl"]["kl_k3_per_token"] < 0.1 and s["heldout_reward_after"] > 0


@pytest.mark.slow
def test_grpo_on_ray_rollout_and_scoring_jobs_and_learner_actor(committed_em, checkpoint, ray_local) -> None:
    em = committed_em  # the rollout and scoring actors connect to the store themselves: rows must be committed
    base = seed_starter(em, checkpoint)
    cfg = PPOConfig(
        algorithm="grpo",
        policy=base.name,
        rounds=1,
        samples=4,
        eval_samples=1,
        lr=2e-4,
        epochs=2,
        minibatch_size=16,
        kl_coef=0.05,
        max_new_tokens=48,
        num_workers=1,
        seed=1,
    )
    res = run_rl(em, cfg, progress=False)
    info = _report(em, res, "GRPO on Ray (1 round)")
    run, s = info["run"], info["run"].summary
    assert run.status == "succeeded" and s["mode"] == "ray"
    round_policies = [p for p in em.catalog.policies() if p.name == s["round_policy"]]
    rows = em.rollouts.list(policy_id=round_policies[0].id, round=1)
    assert len(rows) == s["train_prompts"] * cfg.samples
    # every sample of a prompt was drawn with its own seed: the K samples of a prompt are not all identical
    by_prompt: dict[int, set] = {}
    for r in rows:
        by_prompt.setdefault(r.prompt_id, set()).add(tuple(r.token_ids))
    assert sum(len(v) > 1 for v in by_prompt.values()) >= len(by_prompt) // 2
    assert len(em.scores.for_rollouts([r.id for r in rows])) == len(rows)
    assert s["heldout_kl"]["kl_k3_per_token"] >= 0
