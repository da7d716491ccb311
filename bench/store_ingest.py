"""Score ingest throughput on the same rows: earmark's bulk path vs raw COPY vs per-row ORM inserts.

    python bench/store_ingest.py [--rows 200000] [--naive-rows N]

Prints one JSON object. Target: earmark >= 0.5x raw COPY rows/s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from _db import scratch_database  # noqa: E402

from earmark.domain.records import RolloutCreate  # noqa: E402
from earmark.store import bulk  # noqa: E402
from earmark.store.engine import make_engine, make_session_factory  # noqa: E402
from earmark.store.models import RewardScore  # noqa: E402

DIMENSIONS = ("prosody", "persona_consistency", "correctness", "naturalness")


def make_rows(rollout_ids: list[int], rm_id: int, n: int) -> list[tuple]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        rid = rollout_ids[i // len(DIMENSIONS)]
        dim = DIMENSIONS[i % len(DIMENSIONS)]
        rows.append((rid, rm_id, dim, rng.random(), "f0 within target", {"f0_mean_hz": 100 + rng.random()}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--naive-rows", type=int, default=None, help="rows for the per-row ORM run (default: --rows)")
    args = ap.parse_args()
    naive_n = args.naive_rows or args.rows
    with scratch_database() as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        n_rollouts = -(-args.rows // len(DIMENSIONS))
        with sessions.begin() as s:
            s.execute(
                text(
                    "INSERT INTO prompts (external_id, regime, messages, split, tags) VALUES ('b', 'asr', '[]', 'train', '[]')"
                )
            )
            s.execute(
                text("INSERT INTO policies (name, version, kind, uri, config) VALUES ('b', 0, 'offline', 'u', '{}')")
            )
            s.execute(
                text(
                    "INSERT INTO reward_models (name, version, kind, dimensions, config) VALUES ('b', '1', 'acoustic', '[]', '{}')"
                )
            )
            keys = bulk.ingest_rollouts(
                s,
                (
                    RolloutCreate(prompt_id=1, policy_id=1, sample_index=i % 64, round=i // 64, messages=[], text="x")
                    for i in range(n_rollouts)
                ),
            )
        rollout_ids = sorted(keys.values())
        rows = make_rows(rollout_ids, 1, args.rows)

        def reset() -> None:
            with engine.begin() as c:
                c.execute(text("TRUNCATE reward_scores"))

        results = {}
        # earmark bulk path (COPY -> staging -> INSERT ... ON CONFLICT DO NOTHING)
        reset()
        t = time.perf_counter()
        with sessions.begin() as s:
            added = bulk.ingest_scores(s, rows)
        dt = time.perf_counter() - t
        assert added == len(rows), added
        results["earmark_bulk"] = {"rows": len(rows), "seconds": round(dt, 3), "rows_per_s": round(len(rows) / dt)}

        # raw COPY straight into the table (no conflict handling: a retry would fail the batch)
        reset()
        t = time.perf_counter()
        with sessions.begin() as s:
            bulk._copy_rows(
                s,
                "reward_scores",
                ("rollout_id", "reward_model_id", "dimension", "score", "rationale", "features"),
                ((*r[:5], json.dumps(r[5])) for r in rows),
            )
        dt = time.perf_counter() - t
        results["raw_copy"] = {"rows": len(rows), "seconds": round(dt, 3), "rows_per_s": round(len(rows) / dt)}

        # naive: one ORM INSERT per row (add + flush), one transaction
        reset()
        t = time.perf_counter()
        with sessions.begin() as s:
            for r in rows[:naive_n]:
                s.add(
                    RewardScore(
                        rollout_id=r[0], reward_model_id=r[1], dimension=r[2], score=r[3], rationale=r[4], features=r[5]
                    )
                )
                s.flush()
        dt = time.perf_counter() - t
        results["naive_orm_per_row"] = {"rows": naive_n, "seconds": round(dt, 3), "rows_per_s": round(naive_n / dt)}
        engine.dispose()

    ratio = results["earmark_bulk"]["rows_per_s"] / results["raw_copy"]["rows_per_s"]
    out = {
        "benchmark": "store_ingest",
        "results": results,
        "earmark_vs_copy": round(ratio, 3),
        "earmark_vs_naive": round(
            results["earmark_bulk"]["rows_per_s"] / results["naive_orm_per_row"]["rows_per_s"], 1
        ),
        "target": "earmark_vs_copy >= 0.5",
        "target_met": ratio >= 0.5,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
