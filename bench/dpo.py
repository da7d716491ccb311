"""DPO training throughput, like for like: earmark's DPO worker vs TRL's DPOTrainer; prints one JSON object.

    python bench/dpo.py [--pairs 64] [--batch-size 8] [--epochs 2] [--threads 2] [--runs 5] [--profile]

Both sides, in one process and one run of this script:
* the same HF checkpoint: a Qwen2 built from a config here (``--hidden``/``--layers``; random
  weights, saved once as an ordinary HF folder that both sides load), fp32 on CPU (``dtype``);
* the same rows (token ids: prompt, chosen, rejected; lengths drawn like the demo's rollouts),
  batch size, steps (whole epochs, so the same tokens), optimizer (AdamW, lr 5e-5 constant,
  grad clip 1.0), loss (sigmoid DPO, beta 0.1) and torch threads;
* reference log-probs precomputed: earmark's once-per-snapshot pass (timed apart, reported) and
  TRL's ``DPOConfig(precompute_ref_log_probs=True, bf16=False)`` (its pass also runs before training).

Throughput = real (non-padding) prompt + response tokens of chosen and rejected sequences per
second of optimizer steps (the step callback on TRL's side, the worker's step timer on earmark's).
The two alternate ``--runs`` times (a busy spell on the shared machine hits both); the JSON
reports each side's median and spread and ``ratio_median`` = earmark median / TRL median.
``--profile`` adds the top torch-profiler ops of one earmark step and one TRL step (where time goes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BETA, LR = 0.1, 5e-5


def build_checkpoint(folder: Path, hidden: int, layers: int, vocab_from: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(vocab_from, local_files_only=True)
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_pairs(n: int, vocab: int, pad_id: int, seed: int) -> list:
    """Token-id pairs with the demo's length spread: prompts 24-96 tokens, responses 12-72."""
    import random

    from pipelines.training.data import PreferencePair

    rng = random.Random(seed)
    low = pad_id + 1

    def ids(k: int) -> list[int]:
        return [rng.randrange(low, vocab) for _ in range(k)]

    return [
        PreferencePair(f"r{i}", ids(rng.randint(24, 96)), ids(rng.randint(12, 72)), ids(rng.randint(12, 72)))
        for i in range(n)
    ]


def bench_earmark(ckpt: Path, pairs, pad_id: int, args, ref) -> dict:
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo import train_worker
    from pipelines.training.worker import LocalBackend

    cfg = DPOConfig(
        beta=BETA,
        lr=LR,
        lr_scheduler_type="constant",
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
        "model_dir": str(ckpt),
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


def bench_trl(ckpt: Path, pairs, args) -> dict:
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from pipelines.training.worker import load_lm

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
            bf16=False,
            precompute_ref_log_probs=True,
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
        timer = Timer()
        t0 = time.perf_counter()
        dummy = {"prompt": ["hi"] * 2, "chosen": ["a"] * 2, "rejected": ["b"] * 2}  # TRL's init wants text
        trainer = DPOTrainer(
            model=load_lm(ckpt),
            args=cfg,
            train_dataset=datasets.Dataset.from_dict(dummy),
            processing_class=AutoTokenizer.from_pretrained(ckpt, local_files_only=True),
            callbacks=[timer],
        )
        # exactly earmark's token ids, through TRL's own reference precomputation
        t1 = time.perf_counter()
        trainer.train_dataset = trainer._precompute_ref_logps(
            datasets.Dataset.from_dict(rows), "train", args.batch_size
        )
        ref_s = time.perf_counter() - t1
        with contextlib.redirect_stdout(sys.stderr):  # TRL prints its log dict; stdout is this script's JSON
            out = trainer.train()
        wall = time.perf_counter() - t0
    tokens = args.epochs * sum(2 * len(p.prompt) + len(p.chosen) + len(p.rejected) for p in pairs)
    return {
        "steps": out.global_step,
        "tokens": tokens,
        "step_seconds": round(timer.seconds, 3),
        "wall_seconds": round(wall, 3),
        "reference_pass_seconds": round(ref_s, 3),
        "tokens_per_s": round(tokens / timer.seconds, 1),
        "final_loss": round(out.training_loss, 4),
    }


def profile_steps(ckpt: Path, pairs, pad_id: int, args, ref) -> dict:
    """Top ops (self CPU time) of two earmark steps and two TRL steps."""
    from torch.profiler import ProfilerActivity, profile

    out = {}
    small = argparse.Namespace(**{**vars(args), "epochs": 1})
    sub = pairs[: 2 * args.batch_size]
    for name, fn in (
        ("earmark", lambda: bench_earmark(ckpt, sub, pad_id, small, (ref[0][: len(sub)], ref[1][: len(sub)]))),
        ("trl", lambda: bench_trl(ckpt, sub, small)),
    ):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:12]
        out[name] = [
            {"op": e.key, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 1), "calls": e.count} for e in rows
        ]
    return out


def _summary(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1), "all": xs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()

    import torch

    from pipelines.policy.offline.build import ensure_checkpoint
    from pipelines.training import reference
    from pipelines.training.worker import load_lm

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_checkpoint(Path(tmp) / "qwen2", args.hidden, args.layers, ensure_checkpoint(progress=False))
        lm = load_lm(ckpt)
        pad_id = int(lm.config.pad_token_id)
        pairs = make_pairs(args.pairs, lm.config.vocab_size, pad_id, args.seed)
        t0 = time.perf_counter()
        ref = reference.compute(lm, pairs, pad_id, limit=None, threads=args.threads)
        ref_s = time.perf_counter() - t0
        params = sum(p.numel() for p in lm.parameters())
        del lm
        runs: dict[str, list[dict]] = {"earmark": [], "trl": []}
        for _ in range(args.runs):  # alternating
            runs["earmark"].append(bench_earmark(ckpt, pairs, pad_id, args, ref))
            runs["trl"].append(bench_trl(ckpt, pairs, args))
        prof = profile_steps(ckpt, pairs, pad_id, args, ref) if args.profile else None
    tps = {k: [r["tokens_per_s"] for r in v] for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in tps.items()}
    out = {
        "ratio_median": round(med["earmark"] / med["trl"], 3),
        "ratio_spread": {
            "min": round(min(e / t for e, t in zip(tps["earmark"], tps["trl"], strict=True)), 3),
            "max": round(max(e / t for e, t in zip(tps["earmark"], tps["trl"], strict=True)), 3),
            "note": "per alternating run pair",
        },
        "target": ">= 1.3",
        "dtype": "float32 (both sides; TRL bf16=False; CPU)",
        "model": {"arch": "Qwen2ForCausalLM (HF folder, built from config)", "params": params, "hidden": args.hidden},
        "data": {
            "pairs": len(pairs),
            "mean_prompt_tokens": round(sum(len(p.prompt) for p in pairs) / len(pairs), 1),
            "mean_response_tokens": round(sum(len(p.chosen) + len(p.rejected) for p in pairs) / (2 * len(pairs)), 1),
        },
        "config": {
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "steps": runs["earmark"][0]["steps"],
            "beta": BETA,
            "lr": LR,
            "threads": args.threads,
            "runs": args.runs,
            "trl": "DPOTrainer(bf16=False, precompute_ref_log_probs=True, max_length=None)",
        },
        "tokens_per_s": {k: _summary(v) for k, v in tps.items()},
        "earmark_reference_pass_seconds": round(ref_s, 3),
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
    }
    if prof:
        out["profile"] = prof
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
