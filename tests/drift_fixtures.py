"""Planted worlds for the drift tests, built through the real services (catalog, rollouts, scores,
campaigns, tasks): policy versions whose score distributions, lengths, human ratings and A/B
outcomes are known in advance."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import numpy as np
from annotation_fixtures import make_user
from sqlalchemy import select

from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import Role
from earmark.domain.records import RewardModelCreate, RolloutCreate, ScoreCreate
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.services.drift import DriftService
from earmark.store.models import Comparison, Task

ADMIN = Principal(None, "bootstrap", Role.admin)


def drift(em, role: Role = Role.engineer) -> DriftService:
    """The drift service as ``em`` would expose it (``em.drift`` once registered in earmark.api)."""
    if role == Role.engineer:
        return DriftService(em.ctx)
    return DriftService(em.ctx.as_principal(Principal(None, f"a-{role.value}", role)))


def seed_policy(
    em,
    name: str = "speech",
    versions: Sequence[int] = (0, 1),
    n_prompts: int = 20,
    k: int = 10,
    regime: str = "realtime",
    seed: int = 0,
    length: Callable[[int, np.random.Generator], int] | None = None,
) -> dict:
    """``n_prompts`` prompts, each with ``k`` rollouts per version; rollout round = version.
    Returns {"policies": {v: Policy}, "rollouts": {v: [ids]}, "words": {rollout id: n words},
    "duration": {rollout id: seconds}}."""
    rng = np.random.default_rng(seed)
    rep = em.catalog.import_prompts(
        [
            {
                "external_id": f"{name}-q{i}",
                "regime": regime,
                "messages": [{"role": "user", "content": f"question {i}?"}],
            }
            for i in range(n_prompts)
        ]
    )
    out: dict = {"policies": {}, "rollouts": {}, "words": {}, "duration": {}}
    for v in versions:
        pol = em.catalog.register_policy(name, f"file:///{name}/v{v}", version=v)
        out["policies"][v] = pol
        rows, words = [], []
        for pid in rep.ids.values():
            for s in range(k):
                w = length(v, rng) if length else int(rng.integers(5, 60))
                words.append(w)
                rows.append(
                    RolloutCreate(
                        prompt_id=pid,
                        policy_id=pol.id,
                        round=v,
                        sample_index=s,
                        messages=[],
                        # distinct texts: campaigns skip pairs of identical responses
                        text=" ".join(["word"] * w) + f" (v{v} s{s})",
                        duration_s=0.35 * w + float(rng.uniform(0, 0.5)),
                    )
                )
        keys = em.rollouts.ingest(rows)
        ids = [keys[(r.prompt_id, r.policy_id, r.sample_index, r.round)] for r in rows]
        out["rollouts"][v] = ids
        for rid, r, w in zip(ids, rows, words):
            out["words"][rid], out["duration"][rid] = w, r.duration_s
    return out


def add_scores(em, name: str, kind: str, dimension: str, scores: dict[int, float], version: str = "1") -> int:
    rm = em.scores.register_reward_model(
        RewardModelCreate(name=name, version=version, kind=kind, dimensions=[dimension])
    )
    em.scores.ingest(
        [
            ScoreCreate(rollout_id=rid, reward_model_id=rm.id, dimension=dimension, score=float(x))
            for rid, x in scores.items()
        ]
    )
    return rm.id


def rate(em, rater: Principal, campaign_id: int, answer: Callable[[list[int]], dict], limit: int | None = None) -> int:
    """Rate every item left for ``rater``. ``answer(rollout_ids)`` gets the comparison's rollouts in
    canonical order and returns the submission in canonical terms ("choice": "A" means
    rollout_ids[0]); this maps it to what the rater was shown."""
    me = em.as_principal(rater)
    n = 0
    while (limit is None or n < limit) and (leases := me.tasks.claim(campaign_id, want=1)):
        lease = leases[0]
        ids = em.ctx.tx(
            lambda s, task=lease.task_id: s.scalar(
                select(Comparison.rollout_ids).join(Task, Task.comparison_id == Comparison.id).where(Task.id == task)
            )
        )
        sub = dict(answer(list(ids)))
        if sub.get("choice") in ("A", "B") and len(lease.order) == 2:
            canon = 0 if sub["choice"] == "A" else 1
            sub["choice"] = "A" if lease.order[0] == canon else "B"
        if "mos" in sub:
            sub["mos"] = [sub["mos"][c] for c in lease.order]
        sub.setdefault("ratings", {d: 3 for d in RATING_DIMENSIONS})
        sub.setdefault("listen_ms", {"A": 500, "B": 500})
        me.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), sub)
        n += 1
    return n


def campaign(
    em,
    name: str,
    policy_ids: list[int],
    *,
    protocol: str = "pairwise",
    overlap: int = 1,
    max_items: int = 200,
    rounds: list[int] | None = None,
    gold_ratio: float = 0.0,
):
    return em.as_principal(ADMIN).campaigns.create(
        CampaignCreate(
            name=name,
            protocol=protocol,
            overlap=overlap,
            gold_ratio=gold_ratio,
            policy_ids=policy_ids,
            max_items=max_items,
            rounds=rounds,
        )
    )


def raters(em, n: int, prefix: str = "r") -> list[Principal]:
    return [make_user(em, f"{prefix}{i}") for i in range(n)]


def build_world(em, *, shift: float, seed: int = 0) -> dict:
    """A small loop's worth of data: policy "speech" v0..v2 (round = version), a learned reward
    whose v2 scores move by ``shift`` SDs, a verifiable reward, a generative judge, an A/B
    campaign over v0 and v2 with two raters, and a MOS campaign per round."""
    world = seed_policy(em, versions=(0, 1, 2), n_prompts=10, k=12, seed=seed)
    rng = np.random.default_rng(seed)
    words = world["words"]
    mu = {0: 0.0, 1: shift / 2, 2: shift}
    add_scores(
        em,
        "bt",
        "learned",
        "preference",
        {rid: float(rng.normal(mu[v], 1.0)) for v in mu for rid in world["rollouts"][v]},
    )
    add_scores(
        em,
        "answer_match",
        "verifiable",
        "exact_match",
        {rid: float(rng.random() < 0.6) for v in mu for rid in world["rollouts"][v]},
    )
    add_scores(
        em,
        "judge",
        "generative",
        "helpfulness",
        {rid: float(np.clip(rng.normal(0.6, 0.15), 0, 1)) for v in mu for rid in world["rollouts"][v]},
    )
    ab = campaign(em, "ab", [world["policies"][0].id, world["policies"][2].id], max_items=40)
    people = raters(em, 2)
    for r in people:
        rate(
            em,
            r,
            ab.id,
            lambda ids: {
                "choice": "A" if words[ids[0]] >= words[ids[1]] else "B",
                "strength": 2,
                "ratings": {"prosody": 4, "persona_consistency": 4, "correctness": 4},
            },
        )
    for v in mu:
        camp = campaign(em, f"mos-r{v}", [world["policies"][v].id], protocol="mos", rounds=[v], max_items=8)
        rate(
            em,
            people[0],
            camp.id,
            lambda ids: {"mos": [4], "ratings": {"prosody": 4, "persona_consistency": 4, "correctness": 4}},
        )
    return world
