"""``python -m pipelines.policy.offline [--out DIR] [--steps N] [--seed S] [--force]``: build (or
copy the shipped) offline speech policy checkpoint, then print a few sample generations. The build
itself is ``pipelines.policy.offline.build``; this entry point sits above it and the policy class."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from pipelines.policy.base import SamplingParams
from pipelines.policy.offline.build import MANIFEST, BuildConfig, default_checkpoint_path, ensure_checkpoint
from pipelines.policy.offline.corpus import load_heldout
from pipelines.policy.offline.policy import OfflineSpeechPolicy


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Build the offline speech policy checkpoint (tiny Llama + prosody BPE).")
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $EARMARK_HOME/models/offline-speech-policy-v0)"
    )
    ap.add_argument("--steps", type=int, default=BuildConfig.steps, help="optimizer steps")
    ap.add_argument("--seed", type=int, default=BuildConfig.seed, help="seed for init and data order")
    ap.add_argument(
        "--threads",
        type=int,
        default=BuildConfig.threads,
        help="torch threads for training (part of the recipe: other values give other weights)",
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="train from scratch even if the folder holds a checkpoint or the shipped one matches",
    )
    ap.add_argument("--samples", type=int, default=3, help="sample generations to print after building")
    args = ap.parse_args(argv)

    out = args.out or default_checkpoint_path()
    if args.force and out.exists():
        shutil.rmtree(out)
    cfg = BuildConfig(seed=args.seed, steps=args.steps, threads=args.threads)
    path = ensure_checkpoint(out, cfg, use_bundled=not args.force)
    manifest = json.loads((path / MANIFEST).read_text())
    print(json.dumps({k: manifest[k] for k in ("params", "final_loss", "build_seconds", "corpus_tokens")}))
    if args.samples:
        policy = OfflineSpeechPolicy.from_pretrained(path)
        convs = [h["messages"] for h in load_heldout()[: args.samples]]
        for conv, samples in zip(convs, policy.generate(convs, SamplingParams(max_new_tokens=80), seed=args.seed)):
            print(f"> {conv[-1]['content']}\n  {samples[0].extra['markup']}")
    print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
