"""Rollouts: exactly-once bulk ingest and the queries a job needs to fill only what is missing."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from earmark.domain.records import RolloutCreate
from earmark.errors import InvalidInput
from earmark.security import action
from earmark.services.context import Service
from earmark.store import bulk
from earmark.store.models import Blob, Rollout

RolloutKey = tuple[int, int, int, int]  # (prompt_id, policy_id, sample_index, round)


class RolloutService(Service):
    @action("rollouts.write")
    def ingest(self, rollouts: Sequence[RolloutCreate]) -> dict[RolloutKey, int]:
        """Insert rollouts whose key is new; returns ids for every key sent (new or existing).

        Audio must already be in the blob store and recorded (BlobService.put_*): the foreign key
        on ``audio_sha256`` refuses a rollout that points at an unrecorded blob.
        """
        self.ctx.require("rollouts.write")
        shas = {r.audio_sha256 for r in rollouts if r.audio_sha256}

        def write(s: Session) -> dict[RolloutKey, int]:
            if shas:
                known = set(s.scalars(select(Blob.sha256).where(Blob.sha256.in_(shas))))
                if missing := shas - known:
                    raise InvalidInput(
                        f"{len(missing)} rollout audio blob(s) are not recorded (e.g. {sorted(missing)[0]}); "
                        "store audio with BlobService.put_waveform before ingesting rollouts"
                    )
            return bulk.ingest_rollouts(s, rollouts)

        return self.ctx.tx(write)

    @action("data.read")
    def existing_keys(self, policy_id: int, round: int, prompt_ids: Sequence[int]) -> set[tuple[int, int]]:
        """(prompt_id, sample_index) pairs already stored for this policy and round."""
        q = select(Rollout.prompt_id, Rollout.sample_index).where(
            Rollout.policy_id == policy_id, Rollout.round == round, Rollout.prompt_id.in_(list(prompt_ids))
        )
        return {(p, i) for p, i in self.ctx.tx(lambda s: s.execute(q).all())}

    @action("data.read")
    def list(
        self, *, policy_id: int | None = None, round: int | None = None, prompt_ids: Sequence[int] | None = None
    ) -> list[Rollout]:
        self.ctx.require("data.read")
        q = select(Rollout).order_by(Rollout.id)
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        if round is not None:
            q = q.where(Rollout.round == round)
        if prompt_ids is not None:
            q = q.where(Rollout.prompt_id.in_(list(prompt_ids)))
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("data.read")
    def count(self, policy_id: int | None = None) -> int:
        from sqlalchemy import func

        q = select(func.count()).select_from(Rollout)
        if policy_id is not None:
            q = q.where(Rollout.policy_id == policy_id)
        return int(self.ctx.tx(lambda s: s.scalar(q)) or 0)
