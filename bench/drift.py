"""Drift summary over 1M reward-score rows: in PostgreSQL vs loading the rows into pandas.

    python bench/drift.py [--rows 1000000] [--repeat 3]

Builds a scratch database (bench/_db.py) with one policy at two versions, 10 reward dimensions
and ``--rows`` score rows (rollouts and scores written with COPY through earmark.store.bulk),
then times, on the same rows:

- in_database: ``earmark.drift.report.summarize`` (moments, corr, the fine width_bucket grid and
  everything derived from it: histograms, PSI, JS, KS, Wasserstein, quantiles), two aggregate
  passes with only aggregates leaving PostgreSQL;
- pandas: ``pd.read_sql`` of the selected rows, then the same metrics with numpy/scipy on the
  same definitions (plus scipy's exact ``ks_2samp`` and ``wasserstein_distance`` on the raw
  samples, to show the grid's error); also with a COPY-to-CSV loader, the fastest way we know
  to get rows into pandas, so the comparison is not against a strawman.

Checks that both paths agree, then prints one JSON object. Target: in-database >= 5x faster.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from _db import scratch_database

from earmark.domain.records import RolloutCreate
from earmark.drift import metrics
from earmark.drift.report import Thresholds, summarize
from earmark.drift.sql import Selection
from earmark.store import bulk
from earmark.store.engine import make_engine, make_session_factory

POLICY = "bench-speech"
# (reward model, kind, dimensions): 10 dimensions per rollout, as a realistic scoring job writes.
SCORERS = (
    ("prosody", "acoustic", ("prosody_match", "rate_match")),
    ("answer_match", "verifiable", ("exact_match", "normalized_match")),
    ("judge", "generative", ("helpfulness", "persona_consistency", "naturalness")),
    ("bt", "learned", ("preference",)),
    ("asr_wer", "verifiable", ("transcript_accuracy", "char_accuracy")),
)
N_DIMS = sum(len(d) for _, _, d in SCORERS)
REGIMES = ("asr", "tts", "realtime", "reasoning")


def build(sessions, n_rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    per_version = n_rows // N_DIMS // 2
    n_prompts = 2000
    with sessions.begin() as s:
        s.execute(
            text(
                "INSERT INTO prompts (external_id, regime, messages, split, tags) "
                "SELECT 'p' || g, (ARRAY['asr','tts','realtime','reasoning'])[1 + g % 4], '[]', 'train', '[]' "
                "FROM generate_series(0, :n - 1) g"
            ),
            {"n": n_prompts},
        )
        s.execute(
            text(
                "INSERT INTO policies (name, version, kind, uri, config) VALUES "
                "(:p, 0, 'offline', 'file:///v0', '{}'), (:p, 1, 'offline', 'file:///v1', '{}')"
            ),
            {"p": POLICY},
        )
        rm_ids = []
        for name, kind, dims in SCORERS:
            rm_ids.append(
                s.execute(
                    text(
                        "INSERT INTO reward_models (name, version, kind, dimensions, config) "
                        "VALUES (:n, '1', :k, CAST(:d AS jsonb), '{}') RETURNING id"
                    ),
                    {"n": name, "k": kind, "d": json.dumps(list(dims))},
                ).scalar_one()
            )
        prompt_ids = s.scalars(text("SELECT id FROM prompts ORDER BY id")).all()
        policy_ids = s.scalars(text("SELECT id FROM policies ORDER BY version")).all()
        words = rng.integers(5, 120, size=2 * per_version)
        rollouts = []
        for v, pol in enumerate(policy_ids):
            for i in range(per_version):
                w = int(words[v * per_version + i])
                rollouts.append(
                    RolloutCreate(
                        prompt_id=prompt_ids[i % n_prompts],
                        policy_id=pol,
                        sample_index=i // n_prompts,
                        messages=[],
                        text="word " * w,
                        duration_s=0.4 * w * float(rng.uniform(0.8, 1.2)),
                    )
                )
        keys = bulk.ingest_rollouts(s, rollouts)
        s.execute(text("UPDATE rollouts SET created_at = now() - random() * interval '14 days'"))
        rows = []
        for (_prompt, pol, _si, _rd), rid in keys.items():
            cand = pol == policy_ids[1]
            base = rng.normal(0.0, 1.0, N_DIMS)
            if cand:
                base[4] += 0.3  # judge/helpfulness drifts up in the candidate
            j = 0
            for rm_id, (_name, _kind, dims) in zip(rm_ids, SCORERS):
                for dim in dims:
                    rows.append((rid, rm_id, dim, float(round(base[j], 6)), None, None))
                    j += 1
        bulk.ingest_scores(s, rows)
    with sessions.begin() as s:
        s.execute(text("ANALYZE"))


PANDAS_SQL = """
SELECT rs.reward_model_id AS rm_id, rs.dimension AS dim, r.policy_id = :cand_id AS cand, rs.score,
       r.duration_s AS dur, char_length(r.text) AS len
FROM reward_scores rs JOIN rollouts r ON r.id = rs.rollout_id WHERE r.policy_id IN (:base_id, :cand_id)"""


def load_read_sql(engine, ids: dict[str, int]) -> pd.DataFrame:
    with engine.connect() as c:
        return pd.read_sql_query(text(PANDAS_SQL), c, params=ids)


def load_copy_csv(engine, ids: dict[str, int]) -> pd.DataFrame:
    q = PANDAS_SQL.replace(":cand_id", str(int(ids["cand_id"]))).replace(":base_id", str(int(ids["base_id"])))
    buf = io.BytesIO()
    raw = engine.raw_connection()
    try:
        with raw.driver_connection.cursor() as cur, cur.copy(f"COPY ({q}) TO STDOUT (FORMAT csv, HEADER)") as cp:
            for chunk in cp:
                buf.write(chunk)
    finally:
        raw.close()
    buf.seek(0)
    df = pd.read_csv(
        buf,
        dtype={"rm_id": "int64", "dim": "string", "score": "float64", "dur": "float64", "len": "int64"},
        true_values=["t"],
        false_values=["f"],
    )
    return df


def pandas_summary(df: pd.DataFrame, th: Thresholds) -> dict[tuple[int, str], dict]:
    """The same summary from rows in pandas: moments and corr per side, the same fine grid and
    derived metrics, and (for the record) scipy's exact KS and Wasserstein on the raw samples."""
    fine_bins = th.hist_bins * metrics.FINE_PER_DISPLAY_BIN
    out = {}
    for (rm, dim), g in df.groupby(["rm_id", "dim"], sort=True):
        b, c = g[~g["cand"]], g[g["cand"]]
        xb, xc = b["score"].to_numpy(), c["score"].to_numpy()
        lo, hi = float(g["score"].min()), float(g["score"].max())
        m = metrics.from_fine(*metrics.fine_arrays([xb, xc], lo, hi, fine_bins), lo, hi, th.hist_bins, th.psi_bins)
        d, p = metrics.ks(xb, xc)
        out[(rm, dim)] = {
            "baseline": metrics.sample_stats(xb, b["dur"].to_numpy(float), b["len"].to_numpy(float)),
            "candidate": metrics.sample_stats(xc, c["dur"].to_numpy(float), c["len"].to_numpy(float)),
            "psi": m.psi,
            "js": m.js,
            "ks_d": m.ks_d,
            "wasserstein": m.wasserstein,
            "exact_ks_d": d,
            "exact_ks_p": p,
            "exact_wasserstein": metrics.wasserstein(xb, xc),
        }
    return out


def compare(db, pd_out) -> dict[str, float]:
    """Largest differences: in-database vs pandas on the same definitions, and grid vs exact."""
    same = grid_ks = grid_w1 = 0.0
    for d in db.dimensions:
        ref = pd_out[(d.reward_model_id, d.dimension)]
        for name in ("psi", "js", "ks_d", "wasserstein"):
            same = max(same, abs(getattr(d, name) - ref[name]))
        for side in ("baseline", "candidate"):
            for k in ("mean", "sd", "corr_duration", "corr_length"):
                same = max(same, abs(getattr(d, side)[k] - ref[side][k]))
        grid_ks = max(grid_ks, abs(d.ks_d - ref["exact_ks_d"]))
        grid_w1 = max(grid_w1, abs(d.wasserstein - ref["exact_wasserstein"]))
    return {"same_definitions": same, "ks_d_grid_vs_exact": grid_ks, "wasserstein_grid_vs_exact": grid_w1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    th = Thresholds()
    sel = Selection(POLICY, 0, 1)
    with scratch_database("earmark_bench_drift") as url:
        engine = make_engine(url)
        sessions = make_session_factory(engine)
        t0 = time.perf_counter()
        build(sessions, args.rows)
        build_s = time.perf_counter() - t0
        with engine.connect() as c:
            n_rows = c.execute(text("SELECT count(*) FROM reward_scores")).scalar_one()
            ids = dict(
                zip(
                    ("base_id", "cand_id"),
                    c.execute(
                        text("SELECT id FROM policies WHERE name = :p ORDER BY version"), {"p": POLICY}
                    ).scalars(),
                )
            )

        def in_db():
            with sessions.begin() as s:
                return summarize(s, sel, th)

        def via(loader):
            def run():
                return pandas_summary(loader(engine, ids), th)

            return run

        timings: dict[str, list[float]] = {"in_database": [], "pandas_read_sql": [], "pandas_copy_csv": []}
        results = {}
        in_db()  # warm the buffer cache for both paths alike
        for _ in range(args.repeat):
            for name, fn in (
                ("in_database", in_db),
                ("pandas_read_sql", via(load_read_sql)),
                ("pandas_copy_csv", via(load_copy_csv)),
            ):
                t = time.perf_counter()
                results[name] = fn()
                timings[name].append(time.perf_counter() - t)
        load_t = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            load_read_sql(engine, ids)
            load_t.append(time.perf_counter() - t)
        engine.dispose()
    med = {k: statistics.median(v) for k, v in timings.items()}
    summary = results["in_database"]
    print(
        json.dumps(
            {
                "score_rows": n_rows,
                "dimensions": len(summary.dimensions),
                "build_s": round(build_s, 1),
                "repeat": args.repeat,
                "in_database_s": round(med["in_database"], 3),
                "pandas_read_sql_s": round(med["pandas_read_sql"], 3),
                "pandas_read_sql_load_only_s": round(statistics.median(load_t), 3),
                "pandas_copy_csv_s": round(med["pandas_copy_csv"], 3),
                "speedup_vs_read_sql": round(med["pandas_read_sql"] / med["in_database"], 2),
                "speedup_vs_copy_csv": round(med["pandas_copy_csv"] / med["in_database"], 2),
                "target_speedup": 5.0,
                "max_abs_diff": compare(summary, results["pandas_read_sql"]),
                "alerts": sorted({f"{a.kind}:{a.dimension}" for a in summary.fired}),
                "timings_s": {k: [round(x, 3) for x in v] for k, v in timings.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
