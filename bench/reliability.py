"""Reliability summary: runs the fault-injection, bad-input, concurrency and security tests and
prints JSON counts.

    python bench/reliability.py

Counts come from the tests' outcomes: a fault test passes only if the job finished with every item
exactly once; a bad-input test passes only if the input was refused with a clear error and the
store was unchanged; the concurrency tests fail on any lost or duplicated judgment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _stdout import stdout_to_stderr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAULT_TESTS = {
    "tests/test_rollout_job.py::test_killed_actor_mid_job_every_item_exactly_once": "rollout actor SIGKILL mid-job",
    "tests/test_scoring_job.py::test_killed_scoring_actor_mid_job_every_rollout_scored_once": "scoring actor SIGKILL mid-job",
    "tests/test_faults.py::test_rollout_job_survives_postgres_restart": "PostgreSQL restart during a rollout job",
    "tests/test_faults.py::test_32_raters_with_a_database_restart": "PostgreSQL restart under 32 raters",
    "tests/test_faults.py::test_annotation_app_survives_a_database_restart_mid_item": "PostgreSQL restart under the annotation app",
    "tests/test_faults.py::test_s3_restart_during_blob_writes_and_orphan_sweep": "S3 restart during blob writes",
    "tests/test_train_resume.py": "training worker killed mid-run",
}
JUDGMENT_TESTS = [
    "tests/test_annotation_concurrency.py",
    "tests/test_faults.py::test_32_raters_with_a_database_restart",
]
BAD_INPUT_TESTS = ["tests/test_bad_inputs.py"]
SECURITY_TESTS = ["tests/test_security.py"]


class Collector:
    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}
        self.counts: dict[str, dict[str, int]] = {}  # what the judgment tests measured (record_property)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[report.nodeid] = report.outcome
        if report.when == "call" and report.user_properties:
            self.counts[report.nodeid] = dict(report.user_properties)


def _matching(outcomes: dict[str, str], prefix: str) -> list[str]:
    return [
        o
        for nid, o in outcomes.items()
        if nid == prefix or nid.startswith(prefix + "::") or nid.startswith(prefix + "[")
    ]


def main() -> None:
    targets = sorted(
        {t.split("::")[0] for t in FAULT_TESTS}
        | {t.split("::")[0] for t in JUDGMENT_TESTS}
        | set(BAD_INPUT_TESTS)
        | set(SECURITY_TESTS)
    )
    targets = [t for t in targets if (ROOT / t).exists()]
    col = Collector()
    t0 = time.monotonic()
    with stdout_to_stderr():  # stdout carries the JSON only
        pytest.main(
            ["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *[str(ROOT / t) for t in targets]], plugins=[col]
        )
    outcomes = {nid.replace(str(ROOT) + "/", ""): o for nid, o in col.outcomes.items()}
    faults = {name: _matching(outcomes, t) for t, name in FAULT_TESTS.items()}
    bad = [o for t in BAD_INPUT_TESTS for o in _matching(outcomes, t)]
    judg = [o for t in JUDGMENT_TESTS for o in _matching(outcomes, t)]
    sec = [o for t in SECURITY_TESTS for o in _matching(outcomes, t)]
    counts = [
        c
        for nid, c in col.counts.items()
        if any(nid.replace(str(ROOT) + "/", "").startswith(t) for t in JUDGMENT_TESTS)
    ]
    out = {
        "benchmark": "reliability",
        "faults_injected": sum(1 for v in faults.values() if v),
        "faults_survived": sum(1 for v in faults.values() if v and all(o == "passed" for o in v)),
        "faults": {k: (v[0] if len(v) == 1 else v) if v else "not run" for k, v in faults.items()},
        "bad_inputs_tried": len(bad),
        "bad_inputs_refused_cleanly": bad.count("passed"),
        # counted by the concurrency tests themselves (every item's judgments against k)
        "judgments_expected": sum(c.get("judgments_expected", 0) for c in counts),
        "judgments_lost": sum(c.get("judgments_lost", 0) for c in counts) if counts else "not measured",
        "duplicates": sum(c.get("duplicates", 0) for c in counts) if counts else "not measured",
        "judgment_tests_passed": f"{judg.count('passed')}/{len(judg)}",
        "security_checks_passed": f"{sec.count('passed')}/{len(sec)}",
        "seconds": round(time.monotonic() - t0, 1),
    }
    print(json.dumps(out, indent=2))
    sys.exit(
        0
        if out["faults_injected"] == out["faults_survived"]
        and out["bad_inputs_tried"] == out["bad_inputs_refused_cleanly"]
        and out["judgments_lost"] == 0
        and out["duplicates"] == 0
        else 1
    )


if __name__ == "__main__":
    main()
