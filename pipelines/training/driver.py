"""The driver side of a training job: run row, events -> store, in-process or Ray Train, publishing.

Workers (``Backend``) send events; ``RunRecorder`` turns them into run-row writes through
``TrainingService`` (batched: per-step metrics are flushed every ``FLUSH_S`` seconds and at every
checkpoint), a progress bar, and the caller's ``on_event`` hook. ``fit`` runs a worker function
in this process or on a ``TorchTrainer``; ``publish_policy`` saves the final checkpoint as the
next version of a policy and registers it with its lineage (parent, run, dataset).
"""

from __future__ import annotations

import logging
import queue as pyqueue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from earmark.api import Earmark

log = logging.getLogger(__name__)
FLUSH_S = 1.0
RAY_POLL_S = 0.25


@dataclass
class RunResult:
    run_id: int
    policy: Any  # the registered output policy row
    path: Path
    steps: int
    metrics: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    resumes: list[dict[str, Any]] = field(default_factory=list)


class RunRecorder:
    def __init__(
        self,
        training: Any,
        run_id: int,
        total_steps: int,
        *,
        progress: bool,
        desc: str,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        from pipelines.progress import progress_bar

        self.training, self.run_id, self.on_event = training, run_id, on_event
        self.pending: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.last_flush = time.monotonic()
        self._bar_cm = progress_bar(total=total_steps, desc=desc, enabled=progress, unit="step")
        self.bar = self._bar_cm.__enter__()
        self.done_steps = 0

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "step":
            row = {k: v for k, v in event.items() if k != "type"}
            self.pending.append(row)
            self.metrics.append(row)
            self.bar.update(max(0, row["step"] - self.done_steps))
            self.done_steps = max(self.done_steps, row["step"])
            self.bar.set_postfix_str(_postfix(row))
        elif kind == "resumed":
            self.flush()
            info = {
                "from_step": event["from_step"],
                "attempt": event.get("attempt", 0),
                "reason": event.get("reason", "restarted from the last checkpoint after a worker failure"),
            }
            self.resumes.append(info)
            self.training.mark_resumed(self.run_id, info)
            self.done_steps = min(self.done_steps, event["from_step"])
        elif kind == "checkpoint":
            self.flush()
            self.training.update_summary(self.run_id, last_checkpoint_step=event["step"])
        if self.on_event is not None:
            self.on_event(event)
        if self.pending and time.monotonic() - self.last_flush > FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.training.append_metrics(self.run_id, self.pending)
            self.pending = []
        self.last_flush = time.monotonic()

    def close(self) -> None:
        self.flush()
        self._bar_cm.__exit__(None, None, None)


def _postfix(m: dict[str, Any]) -> str:
    keys = ("loss", "accuracy", "reward_margin", "reward", "kl")
    return " ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float)) + (
        f" {m['tokens_per_s']:.0f} tok/s" if m.get("tokens_per_s") else ""
    )


# ---- running a worker function ----------------------------------------------------------------------
def fit(
    em: Earmark,
    entry: str,
    payload: dict[str, Any],
    *,
    run_id: int,
    algorithm: str,
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    max_failures: int,
    keep: int,
    storage_path: str | None,
    recorder: RunRecorder,
) -> tuple[Path, bool]:
    """Run ``entry`` ("module:function") in-process (0 workers) or on Ray Train.

    Returns the final checkpoint folder and whether it is a temporary copy the caller should remove.
    """
    if num_workers == 0:
        from pipelines.training.worker import LocalBackend

        backend = LocalBackend(run_dir(em, algorithm, run_id), recorder, keep=keep)
        _resolve(entry)(payload, backend)
        final = backend.latest_checkpoint()
        if final is None:
            raise RuntimeError(f"training run {run_id} finished without a final checkpoint")
        return final, False
    return _fit_ray(
        em,
        entry,
        payload,
        run_id=run_id,
        algorithm=algorithm,
        num_workers=num_workers,
        use_gpu=use_gpu,
        cpus_per_worker=cpus_per_worker,
        max_failures=max_failures,
        keep=keep,
        storage_path=storage_path,
        recorder=recorder,
    ), True


def run_dir(em: Earmark, algorithm: str, run_id: int) -> Path:
    return em.settings.home_dir / "training" / f"{algorithm}-run{run_id}"


def _resolve(entry: str) -> Callable[..., Any]:
    import importlib

    module, fn = entry.split(":")
    return getattr(importlib.import_module(module), fn)


def ray_train_entry(config: dict[str, Any]) -> None:
    """What each TorchTrainer worker runs: build the backend, fetch the payload, call the loop."""
    import ray

    from pipelines.training.worker import RayTrainBackend

    backend = RayTrainBackend(config["queue"])
    _resolve(config["entry"])(ray.get(config["payload"]), backend)


def _fit_ray(
    em: Earmark,
    entry: str,
    payload: dict[str, Any],
    *,
    run_id: int,
    algorithm: str,
    num_workers: int,
    use_gpu: bool,
    cpus_per_worker: float,
    max_failures: int,
    keep: int,
    storage_path: str | None,
    recorder: RunRecorder,
) -> Path:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    from pipelines.ray_runtime import ensure_ray

    ensure_ray(em.settings)
    events = Queue(actor_options={"num_cpus": 0})
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        ray_train_entry,
        train_loop_config={"entry": entry, "payload": ray.put(payload), "queue": events},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            # One folder per run id: a later call with the same run id resumes its checkpoint list.
            name=f"earmark-{algorithm}-run{run_id}",
            storage_path=storage_path or str(em.settings.home_dir / "training" / "ray"),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=keep),
        ),
    )
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = trainer.fit()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the driver thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"ray-train-{run_id}", daemon=True)
    thread.start()
    while True:  # the store is written from this thread only
        alive = thread.is_alive()
        try:
            while True:
                recorder(events.get(block=True, timeout=RAY_POLL_S) if alive else events.get_nowait())
        except (Empty, pyqueue.Empty):
            pass
        if not alive:
            break
    ray.kill(events.actor)
    if "error" in box:
        raise box["error"]
    result = box["result"]
    if result.checkpoint is None:
        raise RuntimeError(
            f"Ray Train run {run_id} ended without a checkpoint; see the worker logs under "
            f"{storage_path or em.settings.home_dir / 'training' / 'ray'}"
        )
    local = Path(tempfile.mkdtemp(prefix=f"earmark-{algorithm}-final-"))
    return Path(result.checkpoint.to_directory(str(local)))


# ---- publishing the result -------------------------------------------------------------------------------
def publish_policy(
    em: Earmark,
    training: Any,
    run_id: int,
    base_row: Any,
    policy: Any,
    state: dict[str, Any],
    *,
    name: str,
    dataset_id: int | None,
    lora: Any = None,
) -> tuple[Any, Path]:
    """Load the trained weights into ``policy``, save it as ``$EARMARK_HOME/models/<name>-v<k>``, register v<k>.

    LoRA runs (``lora``: the run's DPOConfig) save the adapter folder (base weights referenced by
    path) unless ``lora.merge_on_export`` or the policy has its own save format (offline policy),
    in which case the adapter is merged into full weights first.
    """
    import json

    from earmark.errors import NotFound
    from pipelines.training.reference import weights_sha256

    weights = {k[len("lm.") :]: v for k, v in state["model"].items() if k.startswith("lm.")}
    partial = bool(state.get("partial"))
    adapter_base = None
    if lora is not None:
        from peft import PeftModel

        from pipelines.training.dpo import wrap_lora

        if not isinstance(policy.model, PeftModel):
            adapter_base = str(Path(getattr(policy.model.config, "_name_or_path", "") or ""))
            policy.model = wrap_lora(policy.model, lora)
        else:
            adapter_base = policy.model.peft_config["default"].base_model_name_or_path
    missing, unexpected = policy.model.load_state_dict(weights, strict=False)
    if partial:
        missing = []
    if lora is not None and (lora.merge_on_export or hasattr(policy, "save")):
        policy.model = policy.model.merge_and_unload()
        lora = None
    if unexpected or [m for m in missing if not m.endswith("lm_head.weight")]:  # lm_head may be tied
        raise RuntimeError(
            f"checkpoint does not fit the base policy (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    try:
        k = em.catalog.policy(name).version + 1
    except NotFound:
        k = 0
    path = em.settings.home_dir / "models" / f"{name}-v{k}"
    if path.exists():  # left by an attempt that failed before registering
        shutil.rmtree(path)
    if hasattr(policy, "save"):
        policy.save(path, version=f"v{k}")
    else:
        policy.model.save_pretrained(path)
        policy.tokenizer.save_pretrained(path)
    if lora is not None:  # an adapter folder: point it at its base weights by absolute path
        cfg_path = path / "adapter_config.json"
        adapter_cfg = json.loads(cfg_path.read_text())
        adapter_cfg["base_model_name_or_path"] = str(Path(adapter_base).resolve()) if adapter_base else None
        cfg_path.write_text(json.dumps(adapter_cfg, indent=2))
    manifest_path = path / "earmark_policy.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update(
        {
            "name": name,
            "version": f"v{k}",
            "weights_sha256": weights_sha256(path),
            "parent": f"{base_row.name}@v{base_row.version}",
            "training_run_id": run_id,
        }
    )
    manifest_path.write_text(json.dumps(manifest, indent=2))
    row = training.register_output_policy(
        run_id,
        name,
        path.resolve().as_uri(),
        kind=base_row.kind,
        parent_id=base_row.id,
        dataset_id=dataset_id,
        version=k,
        config=dict(base_row.config or {}),
    )  # loader options, nothing else
    return row, path


def policy_row(em: Earmark, policy_id: int) -> Any:
    from earmark.errors import NotFound
    from earmark.store.models import Policy

    row = em.ctx.tx(lambda s: s.get(Policy, policy_id))
    if row is None:
        raise NotFound(f"policy id {policy_id} is not registered; list policies with `earmark policies list`")
    return row


def load_local_policy(row: Any) -> tuple[Any, Path]:
    """The policy object and its checkpoint folder; training needs weights on local disk."""
    from pipelines.policy.loader import LOCAL_KINDS, load_policy, uri_to_path

    if row.kind not in LOCAL_KINDS:
        raise ValueError(
            f"policy {row.name} v{row.version} is a {row.kind!r} endpoint; training needs local "
            f"weights (a {'/'.join(LOCAL_KINDS)} policy registered with a file:// uri)"
        )
    policy = load_policy(row.kind, row.uri, **dict(row.config or {}))  # as the rollout actors load it
    return policy, uri_to_path(row.uri)


def mark_failed(training: Any, run_id: int, exc: BaseException) -> None:
    """Record the failure without masking it (the store may be what failed)."""
    try:
        training.mark_failed(run_id, f"{type(exc).__name__}: {exc}")
    except Exception:
        log.exception("could not mark training run %s failed", run_id)


def cleanup(final: tuple[Path, bool] | None) -> None:
    """Remove a temporary local copy of a Ray Train checkpoint (never an in-process run's own)."""
    if final is not None and final[1]:
        shutil.rmtree(final[0], ignore_errors=True)
