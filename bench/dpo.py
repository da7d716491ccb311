"""DPO training throughput: earmark's DPO worker vs TRL's DPOTrainer; prints one JSON object.

    python bench/dpo.py [--pairs 64] [--batch-size 8] [--epochs 2] [--threads 2] [--repeats 2]

Same tiny model (the shipped offline speech policy, 2.1M parameters), same preference pairs (real
samples of that policy: per prompt, the sample whose rate/pitch tokens match the persona is
chosen), same token ids, batch size, steps, optimizer (AdamW, lr 5e-5, grad clip 1.0), loss
(sigmoid DPO, beta 0.1) and torch threads, one process. Throughput = real (non-padding) prompt +
response tokens of chosen and rejected sequences per second of optimizer steps; both sides run
whole epochs, so they process the same tokens.

* earmark: ``pipelines.training.dpo.train_worker`` in-process (the loop the Ray Train workers
  run): reference log-probs precomputed once (that pass is timed separately), length-sorted
  chunks (no padding waste), LM head on response positions only.
* trl_default: ``DPOTrainer`` as configured out of the box except gradient checkpointing, which
  is turned off (it trades speed for memory and would make the comparison unfair to TRL): it runs
  the reference model in every step.
* trl_precomputed: ``DPOTrainer`` with reference log-probs supplied in the batch
  (``precompute_ref_log_probs`` semantics), the like-for-like comparison.

The best of ``--repeats`` runs is reported for each (the machine may be shared). With
``--ray-workers 1,2`` the same worker also runs on Ray Train (DDP), reporting its start-up cost.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BETA, LR = 0.1, 5e-5


def make_pairs(policy, n_pairs: int, seed: int) -> list[dict]:
    """Two samples per prompt; chosen = the one whose first rate/pitch tokens fit the persona card."""
    from pipelines import starter
    from pipelines.policy.base import SamplingParams
    from pipelines.rollouts import prompt_conversation

    cards = {p["name"]: p for p in starter.persona_records()}
    prompts = [r for r in starter.prompt_records() if len(r["messages"]) == 1]
    pairs: list[dict] = []
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=64)
    for start in range(0, len(prompts), 16):  # batched: sample seeds are shared across a batch, fine for a benchmark
        if len(pairs) >= n_pairs:
            break
        batch = prompts[start : start + 16]
        convs = [prompt_conversation(r["messages"], cards[r["persona"]]) for r in batch]
        for r, conv, (a, b) in zip(batch, convs, policy.generate(convs, params, num_samples=2, seed=seed + start)):
            voice = cards[r["persona"]]["voice"]
            fit = [_fit(s.extra["prosody"], voice) for s in (a, b)]
            if fit[0] == fit[1] or a.token_ids == b.token_ids or len(pairs) >= n_pairs:
                continue
            chosen, rejected = (a, b) if fit[0] > fit[1] else (b, a)
            pairs.append(
                {
                    "row_id": r["external_id"],
                    "prompt_messages": json.dumps(conv),
                    "chosen_ids": chosen.token_ids,
                    "rejected_ids": rejected.token_ids,
                }
            )
    return pairs


def _fit(prosody: dict, voice: dict) -> int:
    return int(prosody["rate"][:1] == [voice["rate"]]) + int(prosody["pitch"][:1] == [voice["pitch"]])


def bench_earmark(checkpoint: Path, pairs, pad_id: int, args, ref) -> dict:
    from pipelines.training.dpo import DPOConfig, train_worker
    from pipelines.training.worker import LocalBackend

    cfg = DPOConfig(
        beta=BETA,
        lr=LR,
        epochs=args.epochs,
        batch_size=args.batch_size,
        threads=args.threads,
        checkpoint_every=0,
        seed=0,
    )
    steps: list[dict] = []
    payload = {
        "config": cfg.model_dump(mode="json"),
        "pairs": pairs,
        "ref_chosen": ref[0],
        "ref_rejected": ref[1],
        "model_dir": str(checkpoint),
        "pad_id": pad_id,
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_worker(payload, LocalBackend(Path(tmp), lambda e: steps.append(e) if e["type"] == "step" else None))
        wall = time.perf_counter() - t0
    step_s = sum(s["seconds"] for s in steps)
    tokens = sum(s["tokens"] for s in steps)
    return {
        "steps": len(steps),
        "tokens": tokens,
        "step_seconds": round(step_s, 3),
        "wall_seconds": round(wall, 3),
        "tokens_per_s": round(tokens / step_s, 1),
        "padding": round(sum(s["padding"] for s in steps) / len(steps), 4),
        "final_loss": round(steps[-1]["loss"], 4),
    }


def bench_earmark_ray(checkpoint: Path, pairs, pad_id: int, args, ref, workers: int) -> dict:
    """The same worker on Ray Train (DDP over ``workers``): wall time includes Ray Train's start-up."""
    from types import SimpleNamespace

    from earmark.config import Settings
    from pipelines.training.dpo import DPOConfig
    from pipelines.training.driver import fit

    cfg = DPOConfig(
        beta=BETA,
        lr=LR,
        epochs=args.epochs,
        batch_size=args.batch_size,
        checkpoint_every=0,
        seed=0,
        num_workers=workers,
    )
    payload = {
        "config": cfg.model_dump(mode="json"),
        "pairs": pairs,
        "ref_chosen": ref[0],
        "ref_rejected": ref[1],
        "model_dir": str(checkpoint),
        "pad_id": pad_id,
    }
    steps: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        fake_em = SimpleNamespace(settings=Settings(home=Path(tmp)))
        t0 = time.perf_counter()
        _final, _ = fit(
            fake_em,
            "pipelines.training.dpo:train_worker",
            payload,
            run_id=int(time.time()),
            algorithm="dpo",
            num_workers=workers,
            use_gpu=False,
            cpus_per_worker=1,
            max_failures=0,
            keep=1,
            storage_path=None,
            recorder=lambda e: steps.append(e) if e["type"] == "step" else None,
        )
        wall = time.perf_counter() - t0
    step_s = sum(s["seconds"] for s in steps)
    tokens = sum(s["tokens"] for s in steps)
    return {
        "workers": workers,
        "steps": len(steps),
        "tokens": tokens,
        "step_seconds": round(step_s, 3),
        "wall_seconds": round(wall, 3),
        "startup_and_teardown_seconds": round(wall - step_s, 3),
        "tokens_per_s": round(tokens / step_s, 1),
    }


def bench_trl(policy, pairs, args, ref, precomputed: bool) -> dict:
    import datasets
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Timer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.t = 0.0, 0.0

        def on_step_begin(self, *a, **k) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k) -> None:
            self.seconds += time.perf_counter() - self.t

    rows = {
        "prompt_ids": [p.prompt for p in pairs],
        "chosen_ids": [p.chosen for p in pairs],
        "rejected_ids": [p.rejected for p in pairs],
    }
    if precomputed:
        rows |= {"ref_chosen_logps": ref[0], "ref_rejected_logps": ref[1]}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = DPOConfig(
            output_dir=tmp,
            beta=BETA,
            learning_rate=LR,
            lr_scheduler_type="constant",
            per_device_train_batch_size=args.batch_size,
            num_train_epochs=args.epochs,
            max_grad_norm=1.0,
            optim="adamw_torch",
            weight_decay=0.0,
            report_to=[],
            use_cpu=True,
            max_length=None,
            activation_checkpointing=False,
            save_strategy="no",
            logging_steps=10_000,
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        dummy = {
            "prompt": [[{"role": "user", "content": "hi"}]] * 2,
            "chosen": [[{"role": "assistant", "content": "a"}]] * 2,
            "rejected": [[{"role": "assistant", "content": "b"}]] * 2,
        }
        timer = Timer()
        trainer = DPOTrainer(
            model=copy.deepcopy(policy.model),
            ref_model=None if precomputed else copy.deepcopy(policy.model),
            args=cfg,
            train_dataset=datasets.Dataset.from_dict(dummy),
            processing_class=policy.tokenizer,
            callbacks=[timer],
        )
        trainer.train_dataset = datasets.Dataset.from_dict(rows)  # exactly earmark's token ids
        trainer.precompute_ref_logps = precomputed
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints its log dict; stdout is this script's JSON
            out = trainer.train()
        wall = time.perf_counter() - t0
    tokens = args.epochs * sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    return {
        "steps": out.global_step,
        "tokens": tokens,
        "step_seconds": round(timer.seconds, 3),
        "wall_seconds": round(wall, 3),
        "tokens_per_s": round(tokens / timer.seconds, 1),
        "padding": round(_trl_padding(pairs, args.batch_size, policy), 4),
        "final_loss": round(out.training_loss, 4),
    }


def _trl_padding(pairs, batch_size: int, policy) -> float:
    """Padding share of TRL's collator on consecutive batches (its sampler shuffles; same distribution)."""
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    coll = DataCollatorForPreference(pad_token_id=policy.tokenizer.pad_token_id or 0)
    real = padded = 0
    for s in range(0, len(pairs), batch_size):
        b = coll(
            [
                {"prompt_ids": p.prompt, "chosen_ids": p.chosen, "rejected_ids": p.rejected}
                for p in pairs[s : s + batch_size]
            ]
        )
        real += int(b["attention_mask"].sum())
        padded += b["attention_mask"].numel()
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--ray-workers",
        type=str,
        default="",
        help="also time the worker on Ray Train with these worker counts, e.g. 1,2 (start-up included)",
    )
    args = ap.parse_args()

    import torch

    from earmark.config import Settings
    from pipelines.policy.offline.build import ensure_checkpoint
    from pipelines.policy.offline.policy import OfflineSpeechPolicy
    from pipelines.training import reference
    from pipelines.training.data import pairs_from_rows, policy_token_info

    torch.set_num_threads(args.threads)
    checkpoint = ensure_checkpoint(progress=False).resolve()  # Ray workers run in another directory
    policy = OfflineSpeechPolicy.from_pretrained(checkpoint)
    t0 = time.perf_counter()
    rows = make_pairs(policy, args.pairs, args.seed)
    sample_s = time.perf_counter() - t0
    pairs = pairs_from_rows(rows, policy)
    _, _, pad_id = policy_token_info(policy)
    t0 = time.perf_counter()
    ref = reference.compute(policy.model, pairs, pad_id, limit=512, threads=args.threads)
    ref_s = time.perf_counter() - t0
    torch.set_num_threads(args.threads)

    runs: dict[str, list[dict]] = {"earmark": [], "trl_default": [], "trl_precomputed": []}
    for _ in range(args.repeats):  # interleaved, so a busy spell on a shared machine hits all three
        runs["earmark"].append(bench_earmark(checkpoint, pairs, pad_id, args, ref))
        runs["trl_default"].append(bench_trl(policy, pairs, args, ref, precomputed=False))
        runs["trl_precomputed"].append(bench_trl(policy, pairs, args, ref, precomputed=True))
    best = {k: max(v, key=lambda r: r["tokens_per_s"]) for k, v in runs.items()}
    em = best["earmark"]["tokens_per_s"]
    out = {
        "model": {"name": "offline-speech-policy v0", "params": sum(p.numel() for p in policy.model.parameters())},
        "data": {
            "pairs": len(pairs),
            "mean_prompt_tokens": round(sum(len(p.prompt) for p in pairs) / len(pairs), 1),
            "mean_response_tokens": round(sum(len(p.chosen) + len(p.rejected) for p in pairs) / (2 * len(pairs)), 1),
            "sampling_seconds": round(sample_s, 2),
        },
        "config": {
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "beta": BETA,
            "lr": LR,
            "threads": args.threads,
            "repeats": args.repeats,
        },
        "earmark_reference_pass": {"seconds": round(ref_s, 3), "note": "once per (snapshot, reference); reused after"},
        **best,
        "all_tokens_per_s": {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()},
        "speedup_vs_trl_default": round(em / best["trl_default"]["tokens_per_s"], 2),
        "speedup_vs_trl_precomputed": round(em / best["trl_precomputed"]["tokens_per_s"], 2),
        "speedup_vs_trl_default_incl_reference_pass": round(
            best["trl_default"]["step_seconds"] / (best["earmark"]["step_seconds"] + ref_s), 2
        ),
        "target": ">= 1.3x vs trl_default",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    if args.ray_workers:
        from pipelines.ray_runtime import ensure_ray, shutdown

        t0 = time.perf_counter()
        ensure_ray(Settings(), num_cpus=os.cpu_count())
        out["ray_init_seconds"] = round(time.perf_counter() - t0, 2)
        out["earmark_ray_train"] = [
            bench_earmark_ray(checkpoint, pairs, pad_id, args, ref, int(w)) for w in args.ray_workers.split(",")
        ]
        out["earmark_in_process_wall_seconds"] = best["earmark"]["wall_seconds"]
        shutdown()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
