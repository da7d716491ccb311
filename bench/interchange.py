"""Interchange throughput: text prompts imported vs raw COPY of the same rows; preference pairs exported.

    python bench/interchange.py [--prompts 100000] [--pairs 1000000]

Prints one JSON object:
- import.rows_per_s: `earmark import` of a JSONL file of text prompts (streamed, validated, staged, checked,
  committed) end to end; import.vs_copy: that rate over raw COPY of the same rows in the same run, where
  raw COPY is the minimal loader of that file (read a line, json.loads, COPY into ``prompts``; no
  validation, no checks); target >= 0.3. import.vs_copy_prebuilt compares with COPY of tuples built
  beforehand (no file, no parsing: the floor no importer reaches).
  import.peak_rss_mb: the process's peak resident memory after the import (before the COPY baseline).
- export.rows_per_s: external judgments written as preference pairs with audio references to Parquet
  (``export_pairs_parquet``: three COPY ... TO STDOUT CSV streams in one snapshot -> pyarrow -> a
  ParquetWriter thread); the median of ``--export-runs`` runs (all in runs_rows_per_s); target >= 200000.
  export.copy_only_rows_per_s: the same three queries' COPY TO STDOUT read one after the other with the
  same libpq reader and discarded (PostgreSQL's share, alternated with the export runs).
  export.peak_rss_mb: the process's peak resident memory after the exports. Tables are VACUUM ANALYZEd
  after the bulk setup, as autovacuum would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).parent))
from _db import scratch_database  # noqa: E402

import earmark  # noqa: E402
from earmark.config import Settings  # noqa: E402
from earmark.services.interchange import export_pairs_parquet  # noqa: E402


def prompt_line(prefix: str, i: int) -> dict:
    return {
        "external_id": f"{prefix}-{i}",
        "regime": "reasoning",
        "messages": [
            {"role": "system", "content": "Answer briefly and kindly."},
            {"role": "user", "content": f"Question {i}: what is {i} plus {i * 7 % 13}? Explain in one sentence."},
        ],
        "tags": ["bench"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=100_000)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--export-runs", type=int, default=3, help="export.rows_per_s is the median of these runs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="earmark-bench-ix-"))
    src = tmp / "prompts.jsonl"
    with open(src, "w") as f:
        for i in range(args.prompts):
            f.write(json.dumps(prompt_line("b", i)) + "\n")
    with scratch_database("earmark_bench_ix") as url:
        em = earmark.connect(Settings(home=tmp, database_url=url, blob_url=(tmp / "blobs").as_uri()))
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t0 = time.perf_counter()
        summary = em.interchange.import_file(src)
        t_import = time.perf_counter() - t0
        assert summary.added["prompt"] == args.prompts, summary
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        # raw COPY of the same rows (other ids): (1) the minimal loader of that file: read each line,
        # json.loads, COPY; (2) COPY of tuples built beforehand (the floor). Both committed.
        src_c = tmp / "prompts_c.jsonl"
        src_c.write_text(src.read_text().replace('"external_id": "b-', '"external_id": "c-'))
        cols = "COPY prompts (external_id, regime, messages, split, tags) FROM STDIN"
        with em.ctx.engine.connect() as conn:
            raw = conn.connection.driver_connection
            t0 = time.perf_counter()
            with raw.cursor() as cur, cur.copy(cols) as copy, open(src_c) as f:
                for line in f:
                    p = json.loads(line)
                    copy.write_row(
                        (p["external_id"], p["regime"], json.dumps(p["messages"]), "train", json.dumps(p["tags"]))
                    )
            raw.commit()
            t_copy = time.perf_counter() - t0
            rows = []
            for i in range(args.prompts):
                p = prompt_line("d", i)
                rows.append((p["external_id"], p["regime"], json.dumps(p["messages"]), "train", json.dumps(p["tags"])))
            t0 = time.perf_counter()
            with raw.cursor() as cur, cur.copy(cols) as copy:
                for r in rows:
                    copy.write_row(r)
            raw.commit()
            t_copy_prebuilt = time.perf_counter() - t0
            del rows

        # 1M preference pairs with audio references (set up in SQL; not timed)
        fake = [hashlib.sha256(f"clip{i}".encode()).hexdigest() for i in range(3)]
        with em.ctx.engine.begin() as c:
            for sha in fake:
                c.execute(
                    text("INSERT INTO blobs (sha256, uri, bytes, mime) VALUES (:s, 'file:///x', 1, 'audio/wav')"),
                    {"s": sha},
                )
            c.execute(text("UPDATE prompts SET audio_sha256 = :s WHERE id % 2 = 0"), {"s": fake[0]})
            c.execute(
                text(
                    "INSERT INTO policies (name, version, kind, uri, config) VALUES "
                    "('ext-a', 0, 'external', 'external:ext-a', '{}'), "
                    "('ext-b', 0, 'external', 'external:ext-b', '{}')"
                )
            )
            for name, sha in (("ext-a", fake[1]), ("ext-b", fake[2])):
                c.execute(
                    text(
                        "INSERT INTO rollouts (prompt_id, policy_id, round, sample_index, messages, text, token_ids, "
                        "audio_sha256, sampling) SELECT p.id, po.id, 0, 0, '[]', "
                        "'A reply of ' || po.name || ' to prompt ' || p.id || ', with a comma, and \"quotes\"', '{}', "
                        ":sha, '{}' FROM prompts p, policies po WHERE po.name = :name AND p.external_id LIKE 'b-%'"
                    ),
                    {"name": name, "sha": sha},
                )
            c.execute(
                text(
                    "INSERT INTO external_judgments (source, external_id, annotator, prompt_id, rollout_a_id, "
                    "rollout_b_id, dimension, preference, tie, both_bad, confidence, comment, details, content_sha256) "
                    "SELECT 'bench', 'j' || g, 'rater-' || (g % 97), ra.prompt_id, ra.id, rb.id, 'overall', "
                    "CASE WHEN g % 3 = 0 THEN -1 WHEN g % 3 = 1 THEN 1 ELSE 0 END, g % 3 = 2, false, 0.8, NULL, '{}', '' "
                    "FROM generate_series(1, :n) g "
                    "JOIN (SELECT row_number() OVER (ORDER BY r.prompt_id) - 1 AS k, r.id, r.prompt_id FROM rollouts r "
                    "JOIN policies po ON po.id = r.policy_id AND po.name = 'ext-a') ra ON ra.k = g % :np "
                    "JOIN rollouts rb ON rb.prompt_id = ra.prompt_id AND rb.id <> ra.id"
                ),
                {"n": args.pairs, "np": args.prompts},
            )
        # What autovacuum does after a bulk load (not timed): statistics, hint bits, visibility map.
        # Without it the first read of the 1M fresh rows also writes their hint bits.
        with em.ctx.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text("VACUUM ANALYZE prompts, rollouts, policies, external_judgments"))
        import pyarrow.compute  # noqa: F401  (first import pulls in pandas: ~3 s here, once per process)
        import pyarrow.csv  # noqa: F401
        import pyarrow.parquet  # noqa: F401

        from earmark.services.interchange import PAIRS_SQL, PROMPTS_SQL, RESPONSES_SQL, _CopyOut

        out = tmp / "pairs.parquet"
        runs, copy_runs = [], []
        for _ in range(args.export_runs):  # alternating: the export, then the COPY floor
            t0 = time.perf_counter()
            n = export_pairs_parquet(em.ctx, out)
            runs.append(time.perf_counter() - t0)
            assert n == args.pairs, n
            with em.ctx.engine.connect() as conn:
                raw = conn.connection.driver_connection
                t0 = time.perf_counter()
                for sql in (PROMPTS_SQL, RESPONSES_SQL, PAIRS_SQL):
                    stream = _CopyOut(raw, f"COPY ({sql.format(where='')}) TO STDOUT (FORMAT csv)")
                    while stream.read(1 << 24):
                        pass
                    stream.close()
                copy_runs.append(time.perf_counter() - t0)
                raw.rollback()
        export_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        t_export, t_copy_out = statistics.median(runs), statistics.median(copy_runs)
        em.close()
    result = {
        "import": {
            "rows": args.prompts,
            "rows_per_s": round(args.prompts / t_import),
            "copy_rows_per_s": round(args.prompts / t_copy),
            "vs_copy": round(t_copy / t_import, 3),
            "copy_prebuilt_rows_per_s": round(args.prompts / t_copy_prebuilt),
            "vs_copy_prebuilt": round(t_copy_prebuilt / t_import, 3),
            "peak_rss_mb": round(peak_rss),
            "rss_before_mb": round(rss_before),
            "file_mb": round(src.stat().st_size / 2**20, 1),
            "target_vs_copy": 0.3,
        },
        "export": {
            "rows": n,
            "rows_per_s": round(n / t_export),
            "seconds": round(t_export, 2),
            "runs_rows_per_s": [round(n / t) for t in runs],
            "copy_only_rows_per_s": round(n / t_copy_out),
            "peak_rss_mb": round(export_rss),
            "parquet_mb": round(out.stat().st_size / 2**20, 1),
            "target_rows_per_s": 200_000,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
