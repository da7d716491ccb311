"""TrainingService on real PostgreSQL: run lifecycle, appended metrics/resumes, output policy, roles."""

from __future__ import annotations

import pytest

from earmark.domain.enums import Role
from earmark.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from earmark.security import Principal
from earmark.services.training import TrainingService


def test_run_lifecycle_records_metrics_resumes_and_output_policy(em) -> None:
    svc = TrainingService(em.ctx)
    base = em.catalog.register_policy("tiny", "file:///tmp/tiny-v0", kind="offline")
    run = svc.create_run("dpo", {"beta": 0.1}, base_policy_id=base.id)
    assert run.status == "pending" and run.metrics == [] and run.resumes == []
    svc.mark_running(run.id)
    svc.append_metrics(run.id, [{"step": 1, "loss": 0.69}])
    svc.append_metrics(run.id, [{"step": 2, "loss": 0.6}, {"step": 3, "loss": 0.5}])
    svc.append_metrics(run.id, [])
    svc.mark_resumed(run.id, {"from_step": 2, "reason": "worker died"})
    svc.update_summary(run.id, reference_logps={"key": "k1", "sha256": "ab" * 32})
    svc.update_summary(run.id, pairs=10)
    out = svc.register_output_policy(run.id, "tiny", "file:///tmp/tiny-v1", parent_id=base.id, dataset_id=None)
    svc.mark_succeeded(run.id, {"final_loss": 0.5}, output_policy_id=out.id)
    row = svc.get(run.id)
    assert [m["step"] for m in row.metrics] == [1, 2, 3]
    assert row.resumes[0]["from_step"] == 2 and "at" in row.resumes[0]
    assert row.summary == {"reference_logps": {"key": "k1", "sha256": "ab" * 32}, "pairs": 10, "final_loss": 0.5}
    assert row.status == "succeeded" and row.started_at and row.finished_at and row.output_policy_id == out.id
    assert out.version == 1 and out.parent_id == base.id and out.training_run_id == run.id
    assert svc.find_reference_logps("k1")["sha256"] == "ab" * 32 and svc.find_reference_logps("nope") is None
    with pytest.raises(Conflict, match="new run"):
        svc.mark_running(run.id)


def test_failures_errors_and_roles(em) -> None:
    svc = TrainingService(em.ctx)
    run = svc.create_run("grpo", {})
    svc.mark_failed(run.id, "boom " * 2000)
    row = svc.get(run.id)
    assert row.status == "failed" and len(row.summary["error"]) == 4000
    svc.mark_running(run.id)  # a failed run may be resumed
    assert svc.get(run.id).status == "running"
    with pytest.raises(InvalidInput, match="dpo"):
        svc.create_run("sft", {})
    with pytest.raises(NotFound):
        svc.append_metrics(10**9, [{"step": 1}])
    rater = TrainingService(em.as_principal(Principal(None, "r", Role.rater)).ctx)
    with pytest.raises(PermissionDenied, match="training.run"):
        rater.create_run("dpo", {})
