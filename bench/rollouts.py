"""Rollout throughput: the Ray job with 1 and 2 actors vs a bare single-process loop.

    python bench/rollouts.py [--prompts 16] [--samples 4] [--batch-size 4]

Every run generates the same prompts x samples with the offline speech policy (eSpeak audio
included) and stores them through the same bulk path; each actor and the bare loop use one torch
thread. Steady-state rate excludes start-up (Ray init, actors loading the policy), which is
reported separately. Targets: 2 actors >= 1.7x one actor; 1 actor within 10% of bare.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))
from _db import scratch_database  # noqa: E402

import earmark  # noqa: E402
from earmark.config import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

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
        results = {}

        # bare loop: one process, one torch thread, the same library calls the actors make
        cfg = RolloutJobConfig(**base, round=0)
        t0 = time.perf_counter()
        policy_row, items, _ = plan(em, cfg)
        policy = OfflineSpeechPolicy.from_pretrained(ckpt)
        t_ready = time.perf_counter()
        params = sampling_params(cfg)
        for i in range(0, len(items), cfg.batch_size):
            res = rollouts.generate(policy, items[i : i + cfg.batch_size], params, job_seed=cfg.seed, round=cfg.round)
            rollouts.store(em, policy_row.id, cfg.round, params, res, vocab=policy.name)
        busy = time.perf_counter() - t_ready
        results["bare_loop"] = {
            "samples": len(items),
            "startup_s": round(t_ready - t0, 2),
            "busy_s": round(busy, 2),
            "samples_per_s": round(len(items) / busy, 3),
        }

        ensure_ray(em.settings, num_cpus=2)
        for n, rnd in ((1, 1), (2, 2)):
            r = run_rollout_job(em, RolloutJobConfig(**base, round=rnd, actors=n), progress=False)
            results[f"ray_{n}_actor"] = {
                "samples": r.planned,
                "startup_s": round(r.startup_s, 2),
                "busy_s": round(r.seconds - r.startup_s, 2),
                "samples_per_s": round(r.steady_samples_per_s, 3),
                "end_to_end_samples_per_s": round(r.samples_per_s, 3),
            }
        shutdown()
        em.close()
    one, two, bare = (results[k]["samples_per_s"] for k in ("ray_1_actor", "ray_2_actor", "bare_loop"))
    out = {
        "benchmark": "rollouts",
        "prompts": len(ids),
        "samples_per_prompt": args.samples,
        "batch_size": args.batch_size,
        "results": results,
        "speedup_2_vs_1_actor": round(two / one, 3),
        "ray_1_actor_vs_bare": round(one / bare, 3),
        "targets": {"speedup_2_vs_1_actor": ">= 1.7", "ray_1_actor_vs_bare": ">= 0.9"},
        "target_met": two / one >= 1.7 and one / bare >= 0.9,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
