"""Where `earmark demo` spends its time; prints one JSON object on stdout (the demo's own output
goes to stderr).

    python bench/demo_profile.py [--rounds 2] [--actors 2] [--seed 0] [--home DIR]

Runs the real demo (embedded PostgreSQL, Ray, the real scorers) on a fresh EARMARK_HOME (a temp dir
unless --home is given) with the environment ``./run`` sets, and times each stage by wrapping the
functions the demo calls: store start, seeding, Ray start, rollout jobs, scoring jobs (per scorer
set), simulated raters, DPO, drift reports. ``other`` is the rest (campaigns, labels, snapshots).
Also reports the held-out means of round 0 and the last round, and the load average before and
after (the figures are wall time: on a shared machine they grow with the load).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _k, _v in {
    "OMP_NUM_THREADS": "1",
    "OMP_WAIT_POLICY": "PASSIVE",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}.items():
    os.environ.setdefault(_k, _v)
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]


class StageTimer:
    """Wall seconds per stage; a stage called inside another stage counts for the outer one only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._depth = 0

    def wrap(self, module: Any, attr: str, stage: str | None = None, label: Any = None) -> None:
        fn = getattr(module, attr)

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = stage or attr
            if label is not None:
                name = f"{name}:{label(*args, **kwargs)}"
            self._depth += 1
            t0 = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - t0
                    self.calls[name] = self.calls.get(name, 0) + 1

        setattr(module, attr, timed)


def _scorer_label(_em: Any, cfg: Any, *args: Any, **kwargs: Any) -> str:
    return ",".join(s.name for s in cfg.scorers)


def instrument(timer: StageTimer) -> None:
    import earmark
    import pipelines.demo as demo
    import pipelines.loop as loop
    import pipelines.ray_runtime as ray_runtime
    import pipelines.rollout_job as rollout_job
    import pipelines.scoring_job as scoring_job

    timer.wrap(earmark, "connect", "store_start")
    timer.wrap(demo, "seed_demo", "seed")
    timer.wrap(ray_runtime, "ensure_ray", "ray_start")
    timer.wrap(rollout_job, "run_rollout_job", "rollouts")
    timer.wrap(scoring_job, "run_scoring_job", "scoring", label=_scorer_label)
    timer.wrap(demo, "simulate_raters", "simulated_raters")
    timer.wrap(loop, "train_dpo_round", "dpo")
    timer.wrap(demo, "_drift", "drift")
    timer.wrap(scoring_job, "release_actors", "release_actors")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="the demo's seed (earmark demo --seed)")
    ap.add_argument("--home", type=Path, default=None, help="EARMARK_HOME (default: a fresh temp dir)")
    args = ap.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="earmark-demo-profile-"))
    os.environ["EARMARK_HOME"] = str(home)

    load_start = os.getloadavg()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(sys.stderr):
        from rich.console import Console

        import pipelines.demo as demo
        from earmark.config import Settings

        demo.console = Console(file=sys.stderr, width=120)
        timer = StageTimer()
        instrument(timer)
        imports_s = time.monotonic() - t0
        reports = demo.run_demo(Settings(), rounds=args.rounds, actors=args.actors, seed=args.seed)
    total = time.monotonic() - t0
    stages = {"imports": round(imports_s, 1)}
    stages.update({k: round(v, 1) for k, v in sorted(timer.seconds.items(), key=lambda kv: -kv[1])})
    stages["other"] = round(total - sum(stages.values()), 1)
    first, last = reports[0].heldout_means, reports[-1].heldout_means
    print(
        json.dumps(
            {
                "total_s": round(total, 1),
                "total_min": round(total / 60, 2),
                "stages_s": stages,
                "calls": timer.calls,
                "round_s": {str(r.round): round(r.seconds, 1) for r in reports},
                "heldout": {
                    d: {"round0": round(first[d], 4), "last": round(last[d], 4), "gain": round(last[d] - first[d], 4)}
                    for d in sorted(first)
                    if d in last
                },
                "heldout_per_round": {
                    str(r.round): {d: round(v, 4) for d, v in r.heldout_means.items()} for r in reports
                },
                "labels_per_round": {str(r.round): r.label_counts for r in reports if r.label_counts},
                "seed": args.seed,
                "loadavg_start": [round(x, 2) for x in load_start],
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
                "rounds": args.rounds,
                "actors": args.actors,
                "home": str(home),
            }
        )
    )


if __name__ == "__main__":
    main()
