"""Reward models and their scores. Re-scoring with a new scorer version adds rows, never overwrites."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark.domain.records import RewardModelCreate, ScoreCreate
from earmark.services.context import Service
from earmark.store import bulk
from earmark.store.models import RewardModel, RewardScore, Rollout


class ScoreService(Service):
    def register_reward_model(self, spec: RewardModelCreate) -> RewardModel:
        """Get or create the (name, version) row; the config of an existing version must match."""
        self.ctx.require("scores.write")

        def write(s: Session) -> RewardModel:
            s.execute(insert(RewardModel).values(
                name=spec.name, version=spec.version, kind=spec.kind.value, dimensions=spec.dimensions,
                config=spec.config).on_conflict_do_nothing(index_elements=["name", "version"]))
            return s.scalars(select(RewardModel).where(
                RewardModel.name == spec.name, RewardModel.version == spec.version)).one()

        return self.ctx.tx(write)

    def ingest(self, scores: Iterable[ScoreCreate | tuple[Any, ...]]) -> int:
        """Bulk insert; duplicates of (rollout, reward model, dimension) are skipped. Returns rows added."""
        self.ctx.require("scores.write")
        rows = list(scores)
        return self.ctx.tx(lambda s: bulk.ingest_scores(s, rows))

    def unscored_rollouts(self, reward_model_id: int, dimension: str, *,
                          policy_id: int | None = None, limit: int | None = None) -> list[int]:
        """Rollout ids that lack a score for this reward model version and dimension."""
        scored = select(RewardScore.rollout_id).where(
            RewardScore.reward_model_id == reward_model_id, RewardScore.dimension == dimension)
        q = select(Rollout.id).where(Rollout.id.not_in(scored)).order_by(Rollout.id)
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        if limit:
            q = q.limit(limit)
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    def for_rollouts(self, rollout_ids: Sequence[int]) -> list[RewardScore]:
        self.ctx.require("data.read")
        q = select(RewardScore).where(RewardScore.rollout_id.in_(list(rollout_ids))).order_by(RewardScore.id)
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    def count(self) -> int:
        return int(self.ctx.tx(lambda s: s.scalar(select(func.count()).select_from(RewardScore))) or 0)
