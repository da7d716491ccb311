"""Reward models and their scores. Re-scoring with a new scorer version adds rows, never overwrites."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark.domain.records import RewardModelCreate, ScoreCreate
from earmark.security import action
from earmark.services.context import Service
from earmark.store import bulk
from earmark.store.models import RewardModel, RewardScore, Rollout


class ScoreService(Service):
    @action("scores.write")
    def register_reward_model(self, spec: RewardModelCreate) -> RewardModel:
        """Get or create the (name, version) row; the config of an existing version must match."""
        self.ctx.require("scores.write")

        def write(s: Session) -> RewardModel:
            s.execute(
                insert(RewardModel)
                .values(
                    name=spec.name,
                    version=spec.version,
                    kind=spec.kind.value,
                    dimensions=spec.dimensions,
                    config=spec.config,
                )
                .on_conflict_do_nothing(index_elements=["name", "version"])
            )
            return s.scalars(
                select(RewardModel).where(RewardModel.name == spec.name, RewardModel.version == spec.version)
            ).one()

        return self.ctx.tx(write)

    @action("scores.write")
    def ingest(self, scores: Iterable[ScoreCreate | tuple[Any, ...]]) -> int:
        """Bulk insert; duplicates of (rollout, reward model, dimension) are skipped. Returns rows added."""
        self.ctx.require("scores.write")
        rows = list(scores)
        return self.ctx.tx(lambda s: bulk.ingest_scores(s, rows))

    @action("data.read")
    def rollout_contexts(self, rollout_ids: Sequence[int]) -> list[dict[str, Any]]:
        """What a scorer needs per rollout, in one query: conversation, persona card, reference,
        response text/tool calls and the audio blob id (bytes are fetched separately)."""
        self.ctx.require("data.read")
        from earmark.store.models import Persona, Prompt

        q = (
            select(
                Rollout.id,
                Rollout.messages,
                Rollout.text,
                Rollout.tool_calls,
                Rollout.audio_sha256,
                Rollout.ttfa_s,
                Prompt.regime,
                Prompt.reference,
                Persona.name,
                Persona.card,
            )
            .join(Prompt, Prompt.id == Rollout.prompt_id)
            .outerjoin(Persona, Persona.id == Prompt.persona_id)
            .where(Rollout.id.in_(list(rollout_ids)))
            .order_by(Rollout.id)
        )
        out = []
        for r in self.ctx.tx(lambda s: s.execute(q).all()):
            msgs = list(r.messages or [])
            before = msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs
            out.append(
                {
                    "rollout_id": r.id,
                    "regime": r.regime,
                    "messages": before,
                    "reference": r.reference,
                    "persona": {"name": r.name, **r.card} if r.name else None,
                    "response_text": r.text,
                    "response_tool_calls": r.tool_calls or [],
                    "audio_sha256": r.audio_sha256,
                    "ttfa_s": r.ttfa_s,
                }
            )
        return out

    @action("data.read")
    def unscored(
        self,
        reward_model_id: int,
        dimensions: Sequence[str],
        *,
        policy_id: int | None = None,
        rounds: Sequence[int] | None = None,
        regimes: Sequence[str] | None = None,
    ) -> list[int]:
        """Rollouts missing any of these dimensions for this reward model version."""
        have = (
            select(RewardScore.rollout_id)
            .where(RewardScore.reward_model_id == reward_model_id, RewardScore.dimension.in_(list(dimensions)))
            .group_by(RewardScore.rollout_id)
            .having(func.count() >= len(set(dimensions)))
        )
        q = select(Rollout.id).where(Rollout.id.not_in(have)).order_by(Rollout.id)
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        if rounds is not None:
            q = q.where(Rollout.round.in_(list(rounds)))
        if regimes is not None:  # a regime preset's scorers only make sense on that regime's prompts
            from earmark.store.models import Prompt

            q = q.where(Rollout.prompt_id.in_(select(Prompt.id).where(Prompt.regime.in_(list(regimes)))))
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("data.read")
    def lacking_sampling(
        self, keys: Sequence[str], *, regimes: Sequence[str] | None = None, policy_id: int | None = None
    ) -> int:
        """How many rollouts lack any of these decoding settings in their ``sampling`` column
        (a regime preset lists the keys its rewards depend on, e.g. asr: WER moves with decoding)."""
        from sqlalchemy.dialects.postgresql import array

        from earmark.store.models import Prompt

        if not keys:
            return 0
        q = select(func.count()).select_from(Rollout).where(~Rollout.sampling.has_all(array(list(keys))))
        if regimes is not None:
            q = q.where(Rollout.prompt_id.in_(select(Prompt.id).where(Prompt.regime.in_(list(regimes)))))
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        return int(self.ctx.tx(lambda s: s.scalar(q)) or 0)

    @action("data.read")
    def for_rollouts(self, rollout_ids: Sequence[int]) -> list[RewardScore]:
        self.ctx.require("data.read")
        q = select(RewardScore).where(RewardScore.rollout_id.in_(list(rollout_ids))).order_by(RewardScore.id)
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("data.read")
    def reward_model_id(self, name: str) -> int:
        """The latest registered version of a reward model name."""
        from earmark.errors import NotFound

        rid = self.ctx.tx(
            lambda s: s.scalar(
                select(RewardModel.id).where(RewardModel.name == name).order_by(RewardModel.id.desc()).limit(1)
            )
        )
        if rid is None:
            raise NotFound(f"reward model {name!r} is not registered; run `earmark score --scorers {name}` first")
        return rid

    @action("data.read")
    def means(
        self,
        *,
        policy_id: int | None = None,
        rounds: Sequence[int] | None = None,
        dimensions: Sequence[str] | None = None,
    ) -> dict[str, float]:
        """Mean score per dimension (computed in the database), latest scorer version per name."""
        q = (
            select(RewardScore.dimension, func.avg(RewardScore.score))
            .join(Rollout, Rollout.id == RewardScore.rollout_id)
            .where(RewardScore.reward_model_id.in_(select(func.max(RewardModel.id)).group_by(RewardModel.name)))
            .group_by(RewardScore.dimension)
        )
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        if rounds is not None:
            q = q.where(Rollout.round.in_(list(rounds)))
        if dimensions is not None:
            q = q.where(RewardScore.dimension.in_(list(dimensions)))
        return {d: float(m) for d, m in self.ctx.tx(lambda s: s.execute(q).all())}

    @action("data.read")
    def human_pairs(self, campaign_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """Human pairwise judgments as {a, b, winner, rater_pool} over rollout ids (for RM evaluation)."""
        self.ctx.require("data.read")
        from earmark.store.models import Comparison, Judgment, User

        q = (
            select(Comparison.rollout_ids, Judgment.preference, User.role)
            .join(Judgment, Judgment.comparison_id == Comparison.id)
            .join(User, User.id == Judgment.rater_id)
            .where(
                Judgment.preference.is_not(None),
                Comparison.is_gold.is_(False),
                func.cardinality(Comparison.rollout_ids) == 2,
            )
        )
        if campaign_ids:
            q = q.where(Comparison.campaign_id.in_(list(campaign_ids)))
        return [
            {
                "a": ids[0],
                "b": ids[1],
                "winner": "a" if (p or 0) > 0 else "b" if (p or 0) < 0 else "tie",
                "rater_pool": role,
            }
            for ids, p, role in self.ctx.tx(lambda s: s.execute(q).all())
        ]

    @action("data.read")
    def by_dimension(self, rollout_ids: Sequence[int]) -> dict[str, dict[int, float]]:
        """{"name/dimension": {rollout_id: score}} for the latest version of every reward model."""
        latest = select(func.max(RewardModel.id)).group_by(RewardModel.name)
        q = (
            select(RewardModel.name, RewardScore.dimension, RewardScore.rollout_id, RewardScore.score)
            .join(RewardModel, RewardModel.id == RewardScore.reward_model_id)
            .where(RewardScore.rollout_id.in_(list(rollout_ids)), RewardModel.id.in_(latest))
        )
        out: dict[str, dict[int, float]] = {}
        for name, dim, rid, score in self.ctx.tx(lambda s: s.execute(q).all()):
            out.setdefault(f"{name}/{dim}", {})[rid] = score
        return out

    @action("data.read")
    def count(self) -> int:
        return int(self.ctx.tx(lambda s: s.scalar(select(func.count()).select_from(RewardScore))) or 0)
