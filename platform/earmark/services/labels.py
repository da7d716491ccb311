"""Preference labels from judgments: rater-quality weighted votes, adjudications first, AI fill-in.

Per comparison (canonical order: A = rollout_ids[0]):
1. an adjudication, if a reviewer decided the item, wins outright (source "adjudicated");
2. otherwise the judgments of raters cleared for aggregation vote, each weighted by the log-odds of
   their smoothed gold accuracy (a Dawid-Skene-style symmetric weight: a rater at chance counts
   nothing, a reliable one counts a lot); strength (slight/clear/strong) scales the vote;
3. the label's margin is the winning side's share of the weighted vote; below ``min_agreement`` the
   item is dropped as low-agreement, ties are dropped unless ``keep_ties``;
4. optionally, pairs no human judged get an AI label from reward-model scores (source "ai"),
   always marked so that datasets can filter them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from earmark.security import action
from earmark.services.context import Service
from earmark.store.models import Adjudication, Comparison, Judgment, RewardScore, Rollout, User

GOLD_PRIOR = (3.0, 1.0)  # Beta prior on gold accuracy: a new rater starts at 0.75 (weight ~1.1)


class LabelConfig(BaseModel):
    min_agreement: float = Field(default=0.6, ge=0.5, le=1.0, description="winning share of the weighted vote")
    keep_ties: bool = Field(default=False, description="keep tied items (margin 0.5); DPO cannot use them")
    include_uncleared: bool = Field(default=False, description="count raters excluded by quality control")
    ai_fill: bool = Field(default=False, description="label pairs no human judged from reward-model scores")
    ai_reward_model_ids: list[int] = Field(default_factory=list, description="reward model versions for AI labels")
    ai_dimensions: list[str] | None = Field(default=None, description="dimensions averaged; all when unset")
    ai_min_gap: float = Field(default=0.02, ge=0, description="score gap below which no AI label is given")
    ai_temperature: float = Field(default=0.1, gt=0, description="gap -> margin: sigmoid(gap / T)")
    judged_before: datetime | None = Field(
        default=None,
        description="only judgments and adjudications made up to "
        "this time (store clock): an online round's cut-off, so a rebuild "
        "after late judgments gives the same snapshot",
    )


@dataclass(frozen=True)
class PreferenceLabel:
    prompt_id: int
    chosen_rollout_id: int
    rejected_rollout_id: int
    source: str  # "human" | "adjudicated" | "ai"
    margin: float  # confidence in (0.5, 1]; 0.5 for kept ties
    weight: float  # total weighted evidence behind the label
    comparison_id: int | None = None
    judgment_ids: tuple[int, ...] = field(default_factory=tuple)
    votes: int = 0


def rater_weights(s: Session, rater_ids: list[int]) -> dict[int, float]:
    """log-odds of each rater's smoothed gold accuracy (Beta prior), floored at a small positive weight."""
    a0, b0 = GOLD_PRIOR
    rows = dict(
        (r, (c, n))
        for r, c, n in s.execute(
            select(
                Judgment.rater_id,
                func.count().filter(Judgment.gold_correct.is_(True)),
                func.count().filter(Judgment.gold_correct.is_not(None)),
            )
            .where(Judgment.rater_id.in_(rater_ids))
            .group_by(Judgment.rater_id)
        ).all()
    )
    weights = {}
    for r in rater_ids:
        correct, n = rows.get(r, (0, 0))
        acc = (correct + a0) / (n + a0 + b0)
        weights[r] = max(0.05, math.log(acc / (1 - acc)))
    return weights


def _vote(prefs: list[tuple[float, float]]) -> tuple[float, float, float]:
    """(weight for A, for B, tied) from (preference, rater weight) pairs."""
    wa = sum(w * p for p, w in prefs if p > 0)
    wb = sum(w * -p for p, w in prefs if p < 0)
    wt = sum(w / 3 for p, w in prefs if p == 0)  # a tie counts like a slight vote for neither
    return wa, wb, wt


class LabelService(Service):
    @action("data.read")
    def human_labels(
        self, s: Session, campaign_ids: list[int], cfg: LabelConfig
    ) -> tuple[list[PreferenceLabel], dict[str, int]]:
        """Labels for non-gold pairwise/CMOS comparisons of these campaigns, plus drop counts."""
        comps = {
            c.id: c
            for c in s.scalars(
                select(Comparison).where(
                    Comparison.campaign_id.in_(campaign_ids),
                    Comparison.is_gold.is_(False),
                    func.cardinality(Comparison.rollout_ids) == 2,
                )
            )
        }
        aq = select(Adjudication).where(Adjudication.comparison_id.in_(list(comps)))
        if cfg.judged_before is not None:
            aq = aq.where(Adjudication.created_at <= cfg.judged_before)
        adjud = {a.comparison_id: a for a in s.scalars(aq)}
        q = (
            select(Judgment.id, Judgment.comparison_id, Judgment.rater_id, Judgment.preference)
            .join(User, User.id == Judgment.rater_id)
            .where(Judgment.comparison_id.in_(list(comps)), Judgment.preference.is_not(None))
        )
        if cfg.judged_before is not None:
            q = q.where(Judgment.created_at <= cfg.judged_before)
        if not cfg.include_uncleared:
            q = q.where(User.cleared_for_aggregation.is_(True))
        by_comp: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
        for jid, cid, rid, pref in s.execute(q):
            by_comp[cid].append((jid, rid, float(pref or 0.0)))  # preference IS NOT NULL in the query
        weights = rater_weights(s, sorted({rid for js in by_comp.values() for _, rid, _ in js}))
        labels, dropped = [], {"tie": 0, "low_agreement": 0, "unjudged": 0}
        for cid, comp in sorted(comps.items()):
            a, b = comp.rollout_ids
            if cid in adjud:
                adj = adjud[cid]
                if adj.choice in ("A", "B"):
                    win, lose = (a, b) if adj.choice == "A" else (b, a)
                    labels.append(
                        PreferenceLabel(
                            comp.prompt_id,
                            win,
                            lose,
                            "adjudicated",
                            1.0,
                            1.0,
                            cid,
                            tuple(j for j, _, _ in by_comp.get(cid, [])),
                            len(by_comp.get(cid, [])),
                        )
                    )
                else:
                    dropped["tie"] += 1
                continue
            js = by_comp.get(cid, [])
            if not js:
                dropped["unjudged"] += 1
                continue
            wa, wb, wt = _vote([(p, weights[r]) for _, r, p in js])
            total = wa + wb + wt
            if total <= 0 or wa == wb:
                if cfg.keep_ties:
                    labels.append(
                        PreferenceLabel(
                            comp.prompt_id, a, b, "human", 0.5, total, cid, tuple(j for j, _, _ in js), len(js)
                        )
                    )
                else:
                    dropped["tie"] += 1
                continue
            share = max(wa, wb) / total
            if share < cfg.min_agreement:
                dropped["low_agreement"] += 1
                continue
            win, lose = (a, b) if wa > wb else (b, a)
            labels.append(
                PreferenceLabel(
                    comp.prompt_id,
                    win,
                    lose,
                    "human",
                    round(share, 6),
                    round(total, 6),
                    cid,
                    tuple(j for j, _, _ in js),
                    len(js),
                )
            )
        return labels, dropped

    @action("data.read")
    def ai_labels(
        self, s: Session, rollout_ids: list[int], exclude_pairs: set[frozenset[int]], cfg: LabelConfig
    ) -> list[PreferenceLabel]:
        """AI-feedback labels for every same-prompt pair of these rollouts that no human labelled."""
        if not cfg.ai_reward_model_ids or not rollout_ids:
            return []
        q = (
            select(RewardScore.rollout_id, func.avg(RewardScore.score))
            .where(RewardScore.rollout_id.in_(rollout_ids), RewardScore.reward_model_id.in_(cfg.ai_reward_model_ids))
            .group_by(RewardScore.rollout_id)
        )
        if cfg.ai_dimensions:
            q = q.where(RewardScore.dimension.in_(cfg.ai_dimensions))
        score: dict[int, float] = dict(s.execute(q).all())
        prompt_of = dict(s.execute(select(Rollout.id, Rollout.prompt_id).where(Rollout.id.in_(list(score)))).all())
        by_prompt: dict[int, list[int]] = defaultdict(list)
        for rid in sorted(score):
            by_prompt[prompt_of[rid]].append(rid)
        out = []
        for pid, rids in sorted(by_prompt.items()):
            for i, x in enumerate(rids):
                for y in rids[i + 1 :]:
                    if frozenset((x, y)) in exclude_pairs:
                        continue
                    gap = score[x] - score[y]
                    if abs(gap) < cfg.ai_min_gap:
                        continue
                    win, lose = (x, y) if gap > 0 else (y, x)
                    margin = 1 / (1 + math.exp(-abs(gap) / cfg.ai_temperature))
                    out.append(PreferenceLabel(pid, win, lose, "ai", round(margin, 6), round(abs(gap), 6)))
        return out

    @action("data.read")
    def build(
        self, campaign_ids: list[int], cfg: LabelConfig, ai_rollout_ids: list[int] | None = None
    ) -> tuple[list[PreferenceLabel], dict[str, Any]]:
        """Human (and adjudicated) labels, then AI labels for unjudged pairs; with counts by source."""
        self.ctx.require("data.read")

        def read(s: Session) -> tuple[list[PreferenceLabel], dict[str, Any]]:
            human, dropped = self.human_labels(s, campaign_ids, cfg) if campaign_ids else ([], {})
            ai: list[PreferenceLabel] = []
            if cfg.ai_fill:
                covered = {frozenset((h.chosen_rollout_id, h.rejected_rollout_id)) for h in human}
                jq = select(Judgment.comparison_id).where(Judgment.campaign_id.in_(campaign_ids))
                if cfg.judged_before is not None:  # judged after the cut-off = not judged, so AI may fill it
                    jq = jq.where(Judgment.created_at <= cfg.judged_before)
                judged = set(s.scalars(jq)) if campaign_ids else set()
                covered |= {
                    frozenset(c.rollout_ids) for c in s.scalars(select(Comparison).where(Comparison.id.in_(judged)))
                }
                ai = self.ai_labels(s, sorted(ai_rollout_ids or []), covered, cfg)
            counts = {
                "human": sum(x.source == "human" for x in human),
                "adjudicated": sum(x.source == "adjudicated" for x in human),
                "ai": len(ai),
                "dropped": dropped,
            }
            return human + ai, counts

        return self.ctx.tx(read)
