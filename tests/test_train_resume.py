"""Resuming from checkpoints: a Ray Train DPO worker SIGKILLed mid-run (Ray Train restarts the worker
group, the new worker resumes from the last checkpoint, the run row records it), and an in-process
run that failed, continued with ``resume_run_id``."""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_train_dpo import build_snapshot, generated  # noqa: F401 - the fixture

from earmark.services.training import TrainingService
from pipelines.training.config import DPOConfig
from pipelines.training.dpo_job import run_dpo

CHECKPOINT_EVERY = 3
# Ray Train registers a reported checkpoint when its controller next polls the workers (every 2 s by
# default); a worker killed before that poll restarts from the checkpoint before. Kill a little later.
KILL_AFTER_CHECKPOINT_S = 3.0


@pytest.mark.slow
def test_killed_worker_resumes_from_its_last_checkpoint(em, checkpoint, generated, ray_local) -> None:  # noqa: F811
    _, ds = build_snapshot(em, checkpoint, generated)
    seen: dict[str, int] = {}

    log: list = []

    def chaos(event: dict) -> None:
        log.append((event["type"], event.get("attempt"), event.get("step", event.get("from_step"))))
        if event["type"] == "started" and event.get("attempt", 0) == 0:
            seen["pid"] = event["pid"]
        if event["type"] == "checkpoint" and "first_checkpoint_at" not in seen:
            seen["first_checkpoint_at"] = time.monotonic()
        if (
            event["type"] == "step"
            and event.get("attempt", 0) == 0
            and "killed" not in seen
            and time.monotonic() - seen.get("first_checkpoint_at", float("inf")) > KILL_AFTER_CHECKPOINT_S
        ):
            seen["killed"] = event["step"]
            os.kill(seen["pid"], signal.SIGKILL)  # the worker process dies like an OOM-killed or preempted one

    cfg = DPOConfig(
        beta=0.1,
        lr=5e-4,
        batch_size=8,
        max_steps=80,
        epochs=20,
        checkpoint_every=CHECKPOINT_EVERY,
        num_workers=1,
        max_failures=2,
        seed=3,
    )
    res = run_dpo(em, cfg, dataset=ds, progress=False, on_event=chaos)
    run = TrainingService(em.ctx).get(res.run_id)
    print(f"\nkilled at step >= {seen['killed']}; resumes: {run.resumes}; fit {run.summary['fit_seconds']:.1f}s")
    assert "killed" in seen and run.status == "succeeded" and res.steps == 80
    assert len(run.resumes) == 1, str(log)
    resume = run.resumes[0]
    # the worker may have run a few steps past the one the driver saw before the kill landed
    assert resume["from_step"] % CHECKPOINT_EVERY == 0 and 0 < resume["from_step"] < 80
    assert resume["attempt"] == 1
    # steps after the checkpoint ran twice (once before the kill, once after); the run still ends at 80
    steps_after = [m["step"] for m in run.metrics if m["attempt"] == 1]
    assert steps_after == list(range(resume["from_step"] + 1, 81))
    assert res.policy.version == 1 and run.output_policy_id == res.policy.id


def test_failed_in_process_run_resumes_from_its_checkpoint(em, checkpoint, generated) -> None:  # noqa: F811
    _, ds = build_snapshot(em, checkpoint, generated)

    def crash(event: dict) -> None:
        if event["type"] == "step" and event["step"] == 5:
            raise RuntimeError("simulated crash after step 5")

    cfg = DPOConfig(beta=0.1, lr=5e-4, batch_size=8, max_steps=8, checkpoint_every=CHECKPOINT_EVERY, threads=1, seed=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_dpo(em, cfg, dataset=ds, progress=False, on_event=crash)
    svc = TrainingService(em.ctx)
    failed = svc.runs(limit=1)[0]
    assert failed.status == "failed" and "simulated crash" in failed.summary["error"]
    assert [m["step"] for m in failed.metrics] == [1, 2, 3, 4, 5] and failed.summary["last_checkpoint_step"] == 3
    res = run_dpo(em, cfg, resume_run_id=failed.id, progress=False)  # config, snapshot and base come from the row
    run = svc.get(failed.id)
    assert res.run_id == failed.id and run.status == "succeeded" and res.steps == 8
    assert [r["from_step"] for r in run.resumes] == [3]
    assert [m["step"] for m in run.metrics] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
    assert run.summary["reference_logps"]["reused"] is True  # the resumed run found its own sidecar
