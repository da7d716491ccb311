"""Training runs: one row per DPO/PPO/GRPO run, its per-step metrics, resumes and output policy.

Workers never write here: rank 0 reports to the driver and the driver calls this service, so one
process owns the run row. Metrics and resumes are appended with jsonb ``||`` in place (a long run
does not rewrite its whole history per step). No torch or ray here: the UI and CLI read runs cheaply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import cast, func, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from earmark.domain.enums import JobStatus
from earmark.errors import Conflict, InvalidInput, NotFound
from earmark.security import action
from earmark.services.catalog import CatalogService
from earmark.services.context import Service
from earmark.store.models import Policy, TrainingRun

ALGORITHMS = ("dpo", "ipo", "ppo", "grpo")
MAX_ERROR_CHARS = 4000


def _now() -> datetime:
    return datetime.now(UTC)


class TrainingService(Service):
    # ---- lifecycle ------------------------------------------------------------------------------
    @action("training.run")
    def create_run(
        self,
        algorithm: str,
        config: dict[str, Any],
        *,
        dataset_id: int | None = None,
        base_policy_id: int | None = None,
        summary: dict[str, Any] | None = None,
    ) -> TrainingRun:
        """A pending run row; the config is stored verbatim so the run can be resumed or repeated."""
        self.ctx.require("training.run")
        if algorithm not in ALGORITHMS:
            raise InvalidInput(f"algorithm {algorithm!r} is unknown; use one of {', '.join(ALGORITHMS)}")

        def write(s: Session) -> TrainingRun:
            row = TrainingRun(
                algorithm=algorithm,
                status=JobStatus.pending.value,
                config=config,
                dataset_id=dataset_id,
                base_policy_id=base_policy_id,
                metrics=[],
                summary=summary or {},
                resumes=[],
            )
            s.add(row)
            s.flush()
            self.ctx.audit(
                s,
                "training.create",
                "training_run",
                row.id,
                algorithm=algorithm,
                dataset_id=dataset_id,
                base_policy_id=base_policy_id,
            )
            return row

        return self.ctx.tx(write)

    @action("training.run")
    def mark_running(self, run_id: int) -> None:
        self.ctx.require("training.run")

        def write(s: Session) -> None:
            row = self._locked(s, run_id)
            if row.status == JobStatus.succeeded.value:
                raise Conflict(f"training run {run_id} already succeeded; start a new run instead")
            # a failed run may be resumed from its last checkpoint: it runs again
            row.status = JobStatus.running.value
            row.started_at = row.started_at or _now()

        self.ctx.tx(write)

    @action("training.run")
    def append_metrics(self, run_id: int, rows: list[dict[str, Any]]) -> None:
        """Append per-step metric dicts (JSON-serialisable) to the run's ``metrics`` list."""
        self.ctx.require("training.run")
        if not rows:
            return
        self._append(run_id, TrainingRun.metrics, rows)

    @action("training.run")
    def mark_resumed(self, run_id: int, info: dict[str, Any]) -> None:
        """Record that the run restarted from a checkpoint (which step, why, when)."""
        self.ctx.require("training.run")
        self._append(run_id, TrainingRun.resumes, [{"at": _now().isoformat(), **info}])

    @action("training.run")
    def update_summary(self, run_id: int, **fields: Any) -> None:
        """Merge top-level keys into the run's summary (jsonb ``||``)."""
        self.ctx.require("training.run")
        self.ctx.tx(
            lambda s: s.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id)
                .values(summary=TrainingRun.summary.op("||")(cast(fields, JSONB)))
            )
        )

    @action("training.run")
    def mark_succeeded(
        self, run_id: int, summary: dict[str, Any] | None = None, output_policy_id: int | None = None
    ) -> None:
        self._finish(run_id, JobStatus.succeeded.value, summary or {}, output_policy_id)

    @action("training.run")
    def mark_failed(self, run_id: int, error: str, summary: dict[str, Any] | None = None) -> None:
        self._finish(run_id, JobStatus.failed.value, {**(summary or {}), "error": error[:MAX_ERROR_CHARS]}, None)

    @action("training.run")
    def register_output_policy(
        self,
        run_id: int,
        name: str,
        uri: str,
        *,
        kind: str = "offline",
        parent_id: int | None,
        dataset_id: int | None,
        version: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> Policy:
        """Register the trained checkpoint as a new policy version linked to this run."""
        self.ctx.require("training.run")
        policy = CatalogService(self.ctx).register_policy(
            name,
            uri,
            kind=kind,
            parent_id=parent_id,
            version=version,
            training_run_id=run_id,
            dataset_id=dataset_id,
            config=config,
        )
        return policy

    # ---- reads ----------------------------------------------------------------------------------
    @action("data.read")
    def get(self, run_id: int) -> TrainingRun:
        row = self.ctx.tx(lambda s: s.get(TrainingRun, run_id))
        if row is None:
            raise NotFound(f"training run {run_id} does not exist; list runs with `earmark train runs`")
        return row

    @action("data.read")
    def runs(self, *, algorithm: str | None = None, limit: int = 50) -> list[TrainingRun]:
        q = select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit)
        if algorithm:
            q = q.where(TrainingRun.algorithm == algorithm)
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("training.run")
    def find_reference_logps(self, key: str) -> dict[str, Any] | None:
        """The newest reference log-prob sidecar recorded under ``key`` (same data, same reference)."""
        q = (
            select(TrainingRun.summary["reference_logps"])
            .where(TrainingRun.summary["reference_logps"]["key"].astext == key)
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        return self.ctx.tx(lambda s: s.scalar(q))

    # ---- helpers --------------------------------------------------------------------------------
    def _locked(self, s: Session, run_id: int) -> TrainingRun:
        row = s.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
        if row is None:
            raise NotFound(f"training run {run_id} does not exist; create it with TrainingService.create_run")
        return row

    def _append(self, run_id: int, column: Any, items: list[dict[str, Any]]) -> None:
        def write(s: Session) -> None:
            res = s.execute(
                update(TrainingRun)
                .where(TrainingRun.id == run_id)
                .values({column.key: func.coalesce(column, cast([], JSONB)).op("||")(cast(items, JSONB))})
            )
            if res.rowcount == 0:  # type: ignore[attr-defined]  # a CursorResult at runtime
                raise NotFound(f"training run {run_id} does not exist")

        self.ctx.tx(write)

    def _finish(self, run_id: int, status: str, summary: dict[str, Any], output_policy_id: int | None) -> None:
        self.ctx.require("training.run")

        def write(s: Session) -> None:
            row = self._locked(s, run_id)
            row.status = status
            row.finished_at = _now()
            row.summary = {**(row.summary or {}), **summary}
            if output_policy_id is not None:
                row.output_policy_id = output_policy_id
            self.ctx.audit(s, f"training.{status}", "training_run", run_id, output_policy_id=output_policy_id)

        self.ctx.tx(write)


__all__ = ["ALGORITHMS", "TrainingService"]
