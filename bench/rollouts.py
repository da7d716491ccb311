"""Rollout throughput: the Ray job with 1 and 2 actors vs a bare single-process loop.

    python bench/rollouts.py [--prompts 24] [--samples 4] [--batch-size 4] [--repeats 3]

Every run generates the same prompts x samples with the offline speech policy (eSpeak audio
included) and stores them through the same bulk path; each actor and the bare loop use one torch
thread. Steady-state rate excludes start-up (Ray init, actors loading the policy), which is
reported separately. Targets: 2 actors >= 1.7x one actor; 1 actor within 10% of bare.

On a shared machine one short run swings (0.43x to 2.16x were seen): each configuration runs
``--repeats`` times, interleaved (bare, 1 actor, 2 actors, bare, ...) so a burst of outside load
hits all three alike, and the report gives the median rate and the median of the per-repeat
ratios, with every repeat's figure alongside. Only the JSON goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))
from _db import scratch_database  # noqa: E402
from _stdout import stdout_to_stderr  # noqa: E402

import earmark  # noqa: E402
from earmark.config import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3, help="Runs of each configuration (medians reported).")
    args = ap.parse_args()
    with stdout_to_stderr():
        out = measure(args)
    print(json.dumps(out, indent=2))


def measure(args: argparse.Namespace) -> dict:

    import torch

    torch.set_num_threads(1)
    from pipelines import rollouts, starter
    from pipelines.policy.offline.build import ensure_checkpoint
    from pipelines.policy.offline.policy import OfflineSpeechPolicy
    from pipelines.ray_runtime import ensure_ray, shutdown
    from pipelines.rollout_job import RolloutJobConfig, plan, run_rollout_job, sampling_params

    ckpt = ensure_checkpoint().resolve()
    with scratch_database("earmark_bench_roll") as url:
        em = earmark.connect(Settings(home=Path(tempfile.mkdtemp(prefix="earmark-bench-")), database_url=url))
        em.catalog.import_personas(starter.persona_records())
        recs = [
            r
            for r in starter.prompt_records(max_train_per_persona=-(-args.prompts // 6))
            if r["split"] == "train" and "multi_turn" not in r["tags"]
        ][: args.prompts]
        em.catalog.import_prompts([starter.speak_user_turns(r) for r in recs])
        ids = [r["external_id"] for r in recs]
        em.catalog.register_policy("bench-policy", ckpt.as_uri(), kind="offline")
        base = dict(
            policy="bench-policy",
            prompt_ids=ids,
            split=None,
            samples=args.samples,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            seed=1,
        )
        runs: dict[str, list[dict]] = {"bare_loop": [], "ray_1_actor": [], "ray_2_actor": []}
        policy = OfflineSpeechPolicy.from_pretrained(ckpt)
        ensure_ray(em.settings, num_cpus=2)
        for rep in range(args.repeats):
            # bare loop: one process, one torch thread, the same library calls the actors make
            cfg = RolloutJobConfig(**base, round=3 * rep)
            policy_row, items, _ = plan(em, cfg)
            t_ready = time.perf_counter()
            params = sampling_params(cfg)
            for i in range(0, len(items), cfg.batch_size):
                res = rollouts.generate(
                    policy, items[i : i + cfg.batch_size], params, job_seed=cfg.seed, round=cfg.round
                )
                rollouts.store(em, policy_row.id, cfg.round, params, res, vocab=policy.name)
            busy = time.perf_counter() - t_ready
            runs["bare_loop"].append(
                {"samples": len(items), "busy_s": round(busy, 2), "samples_per_s": round(len(items) / busy, 3)}
            )
            for n in (1, 2):
                r = run_rollout_job(em, RolloutJobConfig(**base, round=3 * rep + n, actors=n), progress=False)
                runs[f"ray_{n}_actor"].append(
                    {
                        "samples": r.planned,
                        "startup_s": round(r.startup_s, 2),
                        "busy_s": round(r.seconds - r.startup_s, 2),
                        "samples_per_s": round(r.steady_samples_per_s, 3),
                        "end_to_end_samples_per_s": round(r.samples_per_s, 3),
                    }
                )
        shutdown()
        em.close()
    rate = {k: [r["samples_per_s"] for r in v] for k, v in runs.items()}
    two_vs_one = [b / a for a, b in zip(rate["ray_1_actor"], rate["ray_2_actor"])]
    one_vs_bare = [a / b for a, b in zip(rate["ray_1_actor"], rate["bare_loop"])]
    med_two, med_one = statistics.median(two_vs_one), statistics.median(one_vs_bare)
    return {
        "benchmark": "rollouts",
        "prompts": len(ids),
        "samples_per_prompt": args.samples,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "median_samples_per_s": {k: round(statistics.median(v), 3) for k, v in rate.items()},
        "runs": runs,
        "speedup_2_vs_1_actor": round(med_two, 3),
        "speedup_2_vs_1_actor_per_repeat": [round(x, 3) for x in two_vs_one],
        "ray_1_actor_vs_bare": round(med_one, 3),
        "ray_1_actor_vs_bare_per_repeat": [round(x, 3) for x in one_vs_bare],
        "targets": {"speedup_2_vs_1_actor": ">= 1.7 (median)", "ray_1_actor_vs_bare": ">= 0.9 (median)"},
        "target_met": med_two >= 1.7 and med_one >= 0.9,
    }


if __name__ == "__main__":
    main()
