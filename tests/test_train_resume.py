"""A Ray Train DPO worker SIGKILLed mid-run: Ray Train restarts the worker group, the new worker resumes
from the last checkpoint, the run finishes, and the training run row records the resume."""
from __future__ import annotations

import os
import signal

import pytest

from earmark.services.training import TrainingService
from pipelines.training.dpo import DPOConfig, run_dpo
from test_train_dpo import build_snapshot, generated  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow
CHECKPOINT_EVERY = 3
KILL_AT_STEP = 4


def test_killed_worker_resumes_from_its_last_checkpoint(em, checkpoint, generated, ray_local) -> None:  # noqa: F811
    _, ds = build_snapshot(em, checkpoint, generated)
    seen: dict[str, int] = {}

    log: list = []

    def chaos(event: dict) -> None:
        log.append((event["type"], event.get("attempt"), event.get("step", event.get("from_step"))))
        if event["type"] == "started" and event.get("attempt", 0) == 0:
            seen["pid"] = event["pid"]
        if event["type"] == "step" and event.get("attempt", 0) == 0 and event["step"] >= KILL_AT_STEP and "killed" not in seen:
            seen["killed"] = event["step"]
            os.kill(seen["pid"], signal.SIGKILL)  # the worker process dies like an OOM-killed or preempted one

    cfg = DPOConfig(beta=0.1, lr=5e-4, batch_size=8, max_steps=40, epochs=10, checkpoint_every=CHECKPOINT_EVERY,
                    num_workers=1, max_failures=2, seed=3)
    res = run_dpo(em, cfg, dataset=ds, progress=False, on_event=chaos)
    run = TrainingService(em.ctx).get(res.run_id)
    print(f"\nkilled at step >= {seen['killed']}; resumes: {run.resumes}; fit {run.summary['fit_seconds']:.1f}s")
    assert "killed" in seen and run.status == "succeeded" and res.steps == 40
    assert len(run.resumes) == 1, log
    resume = run.resumes[0]
    # the worker may have run a few steps past the one the driver saw before the kill landed
    assert resume["from_step"] % CHECKPOINT_EVERY == 0 and 0 < resume["from_step"] < 40
    assert resume["attempt"] == 1
    # steps after the checkpoint ran twice (once before the kill, once after); the run still ends at 40
    steps_after = [m["step"] for m in run.metrics if m["attempt"] == 1]
    assert steps_after == list(range(resume["from_step"] + 1, 41))
    assert res.policy.version == 1 and run.output_policy_id == res.policy.id
