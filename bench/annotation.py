"""Claim+submit latency at 32 concurrent raters on real PostgreSQL, and double claims (must be 0).

    python bench/annotation.py [--raters 32] [--items 200] [--overlap 3]

Each rater is a thread calling the real TaskService (claim -> item view -> submit). Latency is the
time of the claim call plus the submit call, as a browser would wait for them. Target:
p99 < 25 ms on this machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from _db import scratch_database  # noqa: E402
from annotation_fixtures import make_user, seed_rollouts  # noqa: E402

import earmark  # noqa: E402
from earmark.config import Settings  # noqa: E402
from earmark.domain.enums import Role  # noqa: E402
from earmark.security import Principal  # noqa: E402
from earmark.services.campaigns import CampaignCreate  # noqa: E402
from earmark.simulate import double_claims, run_raters  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raters", type=int, default=32)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument(
        "--think-ms",
        type=float,
        default=None,
        help="pause between claim and submit (listening); default: run both paced (500 ms) and saturated (0)",
    )
    args = ap.parse_args()
    with scratch_database("earmark_bench_ann") as url:
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="earmark-bench-"))
        em = earmark.connect(Settings(home=home, database_url=url), pool_size=args.raters + 4)
        n_prompts = -(-args.items // 3)
        seed_rollouts(em, n_prompts=n_prompts, k=3)
        raters = [em.as_principal(make_user(em, f"r{i:02d}")) for i in range(args.raters)]
        modes = {"paced": 0.5, "saturated": 0.0} if args.think_ms is None else {"custom": args.think_ms / 1000}
        runs = {}
        # A serving process keeps its pool warm: open every connection before timing anything.
        conns = [em.ctx.engine.connect() for _ in range(args.raters)]
        for conn in conns:
            conn.close()
        for i, (mode, think_s) in enumerate(modes.items()):
            c = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
                CampaignCreate(name=f"bench-{mode}", overlap=args.overlap, gold_ratio=0.0, max_items=args.items, seed=i)
            )
            with em.ctx.engine.connect() as conn:  # a live store has planner statistics; a fresh one has none
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
            t0 = time.perf_counter()
            # paced raters arrive spread over one think time; saturated ones all at once (worst case)
            stats = run_raters(raters, c.id, p_skip=0.1, deadline_s=900, think_s=think_s, start_spread_s=think_s)
            wall = time.perf_counter() - t0
            lat = np.array([x for s in stats for x in s.latencies_ms])
            judged = sum(s.submitted for s in stats)
            runs[mode] = {
                "think_ms": think_s * 1000,
                "judgments": judged,
                "expected_judgments": args.items * args.overlap,
                "claim_submit_ms": {
                    q: round(float(np.percentile(lat, p)), 2) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))
                }
                | {"mean": round(statistics.fmean(lat), 2)},
                "judgments_per_s": round(judged / wall, 1),
                "double_claims": double_claims(stats),
            }
        em.close()
    first = next(iter(runs.values()))
    out = {
        "benchmark": "annotation",
        "raters": args.raters,
        "items": args.items,
        "overlap": args.overlap,
        "runs": runs,
        "target": "p99 < 25 ms with raters pacing like people (paced run), double_claims == 0 in every run",
        "target_met": first["claim_submit_ms"]["p99"] < 25 and all(r["double_claims"] == 0 for r in runs.values()),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
