"""`earmark demo --seed S` is reproducible: two runs of the demo's loop with one seed, each on a fresh
store, make the same rollouts, scores, campaign, simulated judgments, labels, snapshot, DPO run and
held-out means.

Reduced so two runs take a few minutes on two cores: 6 train and 3 held-out prompts, one round, no
generative judge. Everything else is the demo's own code path (run_demo, two Ray actors per pool, so
batches finish in either order; the real acoustic and ASR scorers; simulated raters through
TaskService; snapshot; DPO)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from conftest import fresh_database
from sqlalchemy import create_engine, text

# Rows keyed by what they are (prompt external id, policy version, round, sample), never by
# serial ids or wall-clock columns: two stores agree on these if the runs drew the same things.
ROLLOUT_KEY = "(SELECT p.external_id || '/v' || po.version || '/r' || r.round || '/s' || r.sample_index)"
STAGES: dict[str, str] = {
    "rollouts": f"""
        SELECT {ROLLOUT_KEY}, r.text, r.token_ids, r.audio_sha256, r.seed FROM rollouts r
        JOIN prompts p ON p.id = r.prompt_id JOIN policies po ON po.id = r.policy_id""",
    "scores": f"""
        SELECT {ROLLOUT_KEY}, m.name, s.dimension, round(s.score::numeric, 6) FROM reward_scores s
        JOIN reward_models m ON m.id = s.reward_model_id JOIN rollouts r ON r.id = s.rollout_id
        JOIN prompts p ON p.id = r.prompt_id JOIN policies po ON po.id = r.policy_id""",
    "comparisons": f"""
        SELECT regexp_replace(k.name, '-[0-9]+$', ''), c.is_gold, array_agg({ROLLOUT_KEY} ORDER BY u.ord) FROM comparisons c
        JOIN campaigns k ON k.id = c.campaign_id
        CROSS JOIN LATERAL unnest(c.rollout_ids) WITH ORDINALITY AS u(rid, ord)
        JOIN rollouts r ON r.id = u.rid JOIN prompts p ON p.id = r.prompt_id JOIN policies po ON po.id = r.policy_id
        GROUP BY c.id, k.name, c.is_gold""",
    "judgments": f"""
        SELECT regexp_replace(k.name, '-[0-9]+$', ''), usr.username, j.choice, j.preference, j.presentation, j.gold_correct,
               (SELECT array_agg({ROLLOUT_KEY} ORDER BY u.ord) FROM unnest(c.rollout_ids) WITH ORDINALITY AS u(rid, ord)
                JOIN rollouts r ON r.id = u.rid JOIN prompts p ON p.id = r.prompt_id
                JOIN policies po ON po.id = r.policy_id)
        FROM judgments j JOIN comparisons c ON c.id = j.comparison_id JOIN campaigns k ON k.id = j.campaign_id
        JOIN users usr ON usr.id = j.rater_id""",
    "snapshots": "SELECT name, version, content_sha256, row_count FROM datasets",
    "training": """
        SELECT t.algorithm, t.status, b.version, o.version, t.metrics FROM training_runs t
        LEFT JOIN policies b ON b.id = t.base_policy_id LEFT JOIN policies o ON o.id = t.output_policy_id""",
}
ROOT = Path(__file__).resolve().parents[1]
TRAIN_PROMPTS, HELDOUT_PROMPTS = 6, 3  # 24 train rollouts: 3 batches over the 2 actors
VOLATILE = {"step_s", "tokens_per_s", "samples_per_s", "seconds", "time", "elapsed_s", "wall_s"}


def _stable(v: Any) -> Any:
    """Drop timing figures from training metrics (they are wall clock, not results)."""
    if isinstance(v, dict):
        return {k: _stable(x) for k, x in v.items() if k not in VOLATILE and not k.endswith("_s")}
    if isinstance(v, list):
        return [_stable(x) for x in v]
    return v


def fingerprint(url: str) -> dict[str, str]:
    """Per stage, a digest of its rows (sorted, canonical JSON)."""
    engine = create_engine(url)
    out = {}
    with engine.connect() as c:
        for stage, sql in STAGES.items():
            rows = sorted(json.dumps(_stable(list(r)), sort_keys=True, default=str) for r in c.execute(text(sql)))
            out[stage] = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16] + f" ({len(rows)} rows)"
        uris = [r[0] for r in c.execute(text("SELECT uri FROM datasets ORDER BY name, version"))]
    engine.dispose()
    import pyarrow.parquet as pq

    for n, uri in enumerate(uris):  # the snapshots' rows, column by column
        table = pq.read_table(urlparse(uri).path).to_pylist()
        for col in table[0] if table else []:
            vals = json.dumps([row[col] for row in table], sort_keys=True, default=str)
            out[f"snapshot{n}.{col}"] = hashlib.sha256(vals.encode()).hexdigest()[:16]
    return out


# One demo run in a process of its own, as `earmark demo` runs: eSpeak NG (the user turns, the
# policy's voice) carries synthesis state from one clip to the next within a process.
RUN = """
import json, sys
import pipelines.demo as demo
from earmark.config import Settings

demo.DEMO_POLICIES["offline"] = lambda: demo.DemoPolicy(
    name="offline-speech", train_per_persona=1, heldout_per_persona=1
)
demo.JUDGE = None  # SmolLM2's load would double the test; it reads the same rollouts as the others
seed_demo = demo.seed_demo
def fewer_prompts(em, dp=None):
    world = seed_demo(em, dp)
    return {**world, "train": world["train"][:%(train)d], "heldout": world["heldout"][:%(heldout)d]}
demo.seed_demo = fewer_prompts
reports = demo.run_demo(Settings(), rounds=1, actors=2, seed=int(sys.argv[1]))
print("REPORTS " + json.dumps([[r.heldout_means, r.label_counts, r.train_metrics.get("accuracy")] for r in reports]))
"""


def _run(tmp: Path, seed: int) -> tuple[list[Any], dict[str, str]]:
    url, drop = fresh_database("earmark_demo_det")
    env = {
        **os.environ,
        "EARMARK_HOME": str(tmp),
        "EARMARK_DATABASE_URL": url,
        "EARMARK_AUTO_MIGRATE": "1",
        "EARMARK_RAY_TMPDIR": tempfile.mkdtemp(prefix="emray"),  # short: Ray's socket paths have a limit
        "PYTHONPATH": os.pathsep.join([str(ROOT / "platform"), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    try:
        code = RUN % {"train": TRAIN_PROMPTS, "heldout": HELDOUT_PROMPTS}
        out = subprocess.run(
            [sys.executable, "-c", code, str(seed)], env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        line = next(x for x in out.stdout.splitlines() if x.startswith("REPORTS "))
        return json.loads(line.removeprefix("REPORTS ")), fingerprint(url)
    finally:
        drop()


def test_demo_is_reproducible_for_a_seed(tmp_path: Path) -> None:
    first, fp1 = _run(tmp_path / "a", 7)
    second, fp2 = _run(tmp_path / "b", 7)
    assert fp1 == fp2, {k: (fp1[k], fp2[k]) for k in fp1 if fp1[k] != fp2[k]}
    assert first == second  # held-out means, label counts, DPO accuracy per round
    assert first[1][1].get("human", 0) > 0  # the simulated raters judged something
