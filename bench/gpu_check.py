"""GPU check of the DPO worker: device placement, bf16 mixed precision, Ray Train with use_gpu; one JSON object.

    python bench/gpu_check.py [--hidden 512] [--layers 8] [--pairs 512] [--batch-size 64] [--no-ray]

Without CUDA it prints {"skipped": true, ...} with the expectation below and exits 0 (so CPU-only
machines and CI can run it). With CUDA it checks, on a Qwen2 built from a config (HF folder):

1. placement: the in-process worker puts the model and every batch on ``cuda`` (the ``started``
   event names the device) and the first step's loss equals the CPU's within 1e-3 (fp32, same
   weights and pairs; the first step is at the reference, so both are log 2 up to float error);
2. mixed precision: ``bf16=True`` autocasts the forward passes; losses stay finite, within 2e-2 of
   fp32 on step 1, and its tokens/s is reported next to fp32's;
3. Ray Train: one worker with ``use_gpu=True`` (``ScalingConfig(use_gpu=True)``, one GPU per worker,
   ``prepare_model`` placing it) runs the same loop and reports ``cuda`` as its device.

Expectation (stated before any run on a GPU; compare with the JSON): every ``ok`` true; bf16
tokens/s >= fp32's on an Ampere-or-newer GPU for this ~40M-parameter model; tokens/s on an H100/H200
at least 20x the 2-core CPU's figure from bench/dpo.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPECTATION = (
    "all checks ok; bf16 tokens/s >= fp32 on Ampere+; GPU tokens/s >= 20x the 2-core CPU figure of bench/dpo.py"
)


def run_local(ckpt: Path, pairs, pad_id: int, ref, device: str, batch_size: int = 8, **cfg_over) -> dict:
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo import train_worker
    from pipelines.training.worker import LocalBackend

    cfg = DPOConfig(
        lr=5e-5,
        lr_scheduler_type="constant",
        batch_size=batch_size,
        epochs=1,
        checkpoint_every=0,
        threads=2,
        **cfg_over,
    )
    events: list[dict] = []
    payload = {
        "config": cfg.model_dump(mode="json"),
        "pairs": pairs,
        "ref_chosen": ref[0],
        "ref_rejected": ref[1],
        "model_dir": str(ckpt),
        "pad_id": pad_id,
    }
    with tempfile.TemporaryDirectory() as tmp:
        train_worker(payload, LocalBackend(Path(tmp), events.append, device=device))
    steps = [e for e in events if e["type"] == "step"]
    started = next(e for e in events if e["type"] == "started")
    timed = steps[1:] or steps
    return {
        "device": started["device"],
        "first_loss": steps[0]["loss"],
        "last_loss": steps[-1]["loss"],
        # the first step pays CUDA's one-time costs (context, kernel selection, autocast caches):
        # throughput is over the steps after it (over all of them when there is only one)
        "tokens_per_s": round(sum(s["tokens"] for s in timed) / sum(s["seconds"] for s in timed), 1),
        "first_step_seconds": round(steps[0]["seconds"], 4),
        "median_step_seconds": round(sorted(s["seconds"] for s in timed)[len(timed) // 2], 4),
        "steps": len(steps),
    }


def run_ray(ckpt: Path, pairs, pad_id: int, ref) -> dict:
    from earmark.config import Settings
    from pipelines.ray_runtime import ensure_ray, shutdown
    from pipelines.training.config import DPOConfig
    from pipelines.training.driver import fit

    cfg = DPOConfig(lr=5e-5, batch_size=8, epochs=1, checkpoint_every=0, num_workers=1, use_gpu=True)
    payload = {
        "config": cfg.model_dump(mode="json"),
        "pairs": pairs,
        "ref_chosen": ref[0],
        "ref_rejected": ref[1],
        "model_dir": str(ckpt),
        "pad_id": pad_id,
    }
    events: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp))
        ensure_ray(settings)  # Ray detects the GPUs itself
        t0 = time.perf_counter()
        fit(
            SimpleNamespace(settings=settings),
            "pipelines.training.dpo:train_worker",
            payload,
            run_id=int(time.time()),
            algorithm="dpo",
            num_workers=1,
            use_gpu=True,
            cpus_per_worker=1,
            max_failures=0,
            keep=1,
            storage_path=None,
            recorder=events.append,
        )
        wall = time.perf_counter() - t0
        shutdown()
    started = next(e for e in events if e["type"] == "started")
    steps = [e for e in events if e["type"] == "step"]
    return {"device": started["device"], "steps": len(steps), "wall_seconds": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=64, help="pairs per step on the GPU (the CPU leg uses 8)")
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"skipped": True, "reason": "no CUDA device visible to torch", "expectation": EXPECTATION}))
        return

    from bench.dpo import build_checkpoint, make_pairs
    from pipelines.policy.offline.build import ensure_checkpoint
    from pipelines.training import reference
    from pipelines.training.worker import load_lm

    out: dict = {"gpu": torch.cuda.get_device_name(0), "expectation": EXPECTATION, "checks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp) / "qwen2", args.hidden, args.layers, ensure_checkpoint(progress=False))
        lm = load_lm(ckpt)
        pad_id = int(lm.config.pad_token_id)
        pairs = make_pairs(args.pairs, lm.config.vocab_size, pad_id, 0)
        out["params"] = sum(p.numel() for p in lm.parameters())
        ref = reference.compute(lm, pairs, pad_id, limit=None, threads=2)
        del lm
        cpu = run_local(ckpt, pairs[:16], pad_id, (ref[0][:16], ref[1][:16]), "cpu")
        gpu32 = run_local(ckpt, pairs, pad_id, ref, "cuda", batch_size=args.batch_size)
        gpu16 = run_local(ckpt, pairs, pad_id, ref, "cuda", batch_size=args.batch_size, bf16=True)
        c = out["checks"]
        c["placement"] = {
            "ok": gpu32["device"].startswith("cuda") and abs(gpu32["first_loss"] - cpu["first_loss"]) < 1e-3,
            "cpu": cpu,
            "cuda_fp32": gpu32,
        }
        finite = all(map(lambda x: x == x and abs(x) < 1e6, (gpu16["first_loss"], gpu16["last_loss"])))
        c["bf16"] = {
            "ok": finite and abs(gpu16["first_loss"] - gpu32["first_loss"]) < 2e-2,
            "cuda_bf16": gpu16,
            "bf16_over_fp32_tokens_per_s": round(gpu16["tokens_per_s"] / gpu32["tokens_per_s"], 2),
        }
        if not args.no_ray:
            try:
                ray = run_ray(ckpt, pairs, pad_id, ref)
                c["ray_train_use_gpu"] = {"ok": ray["device"].startswith("cuda"), **ray}
            except Exception as exc:  # noqa: BLE001 - reported, not hidden
                c["ray_train_use_gpu"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
    out["ok"] = all(v["ok"] for v in out["checks"].values())
    print(json.dumps(out, indent=2))
    sys.exit(0 if out["ok"] else 1)


if __name__ == "__main__":
    main()
