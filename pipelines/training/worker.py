"""What a training worker needs, the same in-process and on Ray Train: rank, device, checkpoints, events.

A training loop is written once against ``Backend``. ``LocalBackend`` runs it in the calling
process (small runs, the demo, no Ray start-up); ``RayTrainBackend`` runs it inside a
``TorchTrainer`` worker, where ``prepare_model`` wraps DDP, checkpoints go through
``ray.train.report`` (so Ray Train restarts a failed worker group from the latest one) and
per-step events reach the driver through a Ray queue: the driver, not the workers, writes the store.

A checkpoint is a folder with ``state.pt``: model and optimizer state, the optimizer step and the
attempt counter; the step plan is recomputed from the config, so nothing else is needed to resume.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

STATE_FILE = "state.pt"
EventSink = Callable[[dict[str, Any]], None]


def set_threads(threads: int) -> None:
    """Fix torch's intra-op threads: N workers on N cores must not oversubscribe them."""
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def default_threads(threads: int | None, in_process: bool, cpus: float = 1.0) -> int:
    """Explicit ``threads`` win; else every core in-process, and the reserved CPUs in a Ray worker."""
    if threads:
        return int(threads)
    return max(1, min(os.cpu_count() or 1, 16)) if in_process else max(1, int(cpus))


def unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def save_state(
    folder: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    m = unwrap(model)
    frozen = any(not p.requires_grad for p in m.parameters())
    weights = m.state_dict()
    if frozen:  # LoRA: only the trained parameters (the base weights are the policy's own)
        trained = {n for n, p in m.named_parameters() if p.requires_grad}
        weights = {k: v for k, v in weights.items() if k in trained}
    state = {"model": weights, "step": step, "partial": frozen, **(extra or {})}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / STATE_FILE)  # a crash mid-write never leaves a torn checkpoint
    return folder


def load_state(folder: Path | str) -> dict[str, Any]:
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not an earmark training checkpoint")
    return torch.load(path, map_location="cpu", weights_only=False)


def configure_cuda(device: torch.device) -> None:
    """On CUDA, keep scaled-dot-product attention off cuDNN's backend. Packed batches give every
    chunk its own length and cuDNN builds an execution plan for each new shape: on an H200 (torch
    2.11, bf16 autocast) that was ~6 ms of CPU per attention call and bf16 training ran 5x slower
    than fp32 (bench/gpu_check.py). The flash and memory-efficient kernels need no plan."""
    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


class Backend:
    rank = 0
    world = 1
    attempt = 0

    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def prepare(self, model: nn.Module) -> nn.Module:
        return model.to(self.device())

    def no_sync(self, model: nn.Module, last_micro: bool):
        return nullcontext() if last_micro or not hasattr(model, "no_sync") else model.no_sync()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            import torch.distributed as dist

            t = t.to(self.device())  # NCCL reduces device tensors only
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.cpu()

    def emit(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    def latest_checkpoint(self) -> Path | None:
        raise NotImplementedError

    def checkpoint(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metrics: dict[str, Any],
        final: bool = False,
    ) -> None:
        """Every rank calls this at the same steps (Ray's report is a barrier); rank 0 writes."""
        raise NotImplementedError


class LocalBackend(Backend):
    """In-process: checkpoints in ``run_dir/checkpoints/step-N`` (the newest ``keep`` kept)."""

    def __init__(self, run_dir: Path, sink: EventSink, keep: int = 2, device: str = "auto") -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.sink = sink
        self.keep = max(1, keep)
        self._device = device

    def device(self) -> torch.device:
        return super().device() if self._device == "auto" else torch.device(self._device)

    def emit(self, event: dict[str, Any]) -> None:
        self.sink({**event, "attempt": self.attempt})

    def _all(self) -> list[Path]:
        if not self.dir.is_dir():
            return []
        found = [p for p in self.dir.glob("step-*") if (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def latest_checkpoint(self) -> Path | None:
        found = self._all()
        return found[-1] if found else None

    def checkpoint(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metrics: dict[str, Any],
        final: bool = False,
    ) -> None:
        save_state(self.dir / f"step-{step:07d}", model, optimizer, step, {"final": final, "attempt": self.attempt})
        for old in self._all()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        self.emit({"type": "checkpoint", "step": step, "final": final})


class RayTrainBackend(Backend):
    """Inside a ``TorchTrainer`` worker."""

    def __init__(self, queue: Any) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        self.queue = queue
        self._ckpt_dir: Path | None = None

    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare(self, model: nn.Module) -> nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def emit(self, event: dict[str, Any]) -> None:
        if self.rank == 0:
            self.queue.put({**event, "attempt": self.attempt})

    def latest_checkpoint(self) -> Path | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        self._ckpt_dir = Path(tempfile.mkdtemp(prefix="earmark-resume-"))
        return Path(ckpt.to_directory(str(self._ckpt_dir)))

    def checkpoint(
        self,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        metrics: dict[str, Any],
        final: bool = False,
    ) -> None:
        import ray.train

        clean = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
        if self.rank != 0:
            ray.train.report(clean, checkpoint=None)
            return
        with tempfile.TemporaryDirectory(prefix="earmark-ckpt-") as tmp:
            save_state(Path(tmp), model, optimizer, step, {"final": final, "attempt": self.attempt})
            ray.train.report(
                clean, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=f"step-{step:07d}"
            )
        self.emit({"type": "checkpoint", "step": step, "final": final})


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int = 0, kind: str = "constant") -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant, linear decay
    to 0 at ``total_steps`` (TRL/transformers' default) or cosine. A function of the step, so
    resuming needs no scheduler state."""
    import math

    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant" or total_steps <= 0:
        return base_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if kind == "linear":
        return base_lr * max(0.0, 1.0 - progress)
    if kind == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"lr scheduler {kind!r} is unknown; use linear, constant or cosine")


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.999), eps=1e-8)


def load_lm(model_dir: str | Path) -> nn.Module:
    """A causal LM from a local folder; an adapter folder (peft) loads its base and the adapter."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    if (model_dir / "adapter_config.json").is_file() and not (model_dir / "config.json").is_file():
        import json

        from peft import PeftModel

        base = json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_lm(base), str(model_dir), is_trainable=True)
    else:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True)
    model.config.use_cache = False
    return model


def resolve_model_dir(name_or_path: str) -> Path:
    """A local HF model folder for a path or a hub id already in the local cache (never downloads)."""
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{p} is not a Hugging Face model folder (no config.json)")
        return p.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - any failure means: not available offline
        raise FileNotFoundError(
            f"model {name_or_path!r} is neither a local folder nor a hub id in the local HF cache; "
            "download it first (huggingface-cli download ...) or pass a checkpoint folder"
        ) from exc
