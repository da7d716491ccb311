"""bench/demo_profile.py's stage timer: wall time per stage, a nested stage counted once (outer)."""

from __future__ import annotations

import importlib.util
import time
import types
from pathlib import Path

import pytest


def _load():  # noqa: ANN202
    path = Path(__file__).resolve().parents[1] / "bench" / "demo_profile.py"
    spec = importlib.util.spec_from_file_location("demo_profile", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage_timer_counts_outer_stages_only_and_labels_calls() -> None:
    timer = _load().StageTimer()
    mod = types.SimpleNamespace()
    mod.inner = lambda: time.sleep(0.02)

    def outer(kind: str) -> str:
        mod.inner()
        return kind

    mod.outer = outer
    timer.wrap(mod, "inner", "ray_start")
    timer.wrap(mod, "outer", "scoring", label=lambda kind: kind)
    assert mod.outer("judge") == "judge"
    mod.outer("wer")
    mod.inner()
    assert set(timer.seconds) == {"scoring:judge", "scoring:wer", "ray_start"}
    assert timer.calls == {"scoring:judge": 1, "scoring:wer": 1, "ray_start": 1}  # inner inside outer not counted
    assert timer.seconds["scoring:judge"] >= 0.02 and timer.seconds["ray_start"] >= 0.02

    def boom() -> None:
        raise RuntimeError("stage failed")

    mod.boom = boom
    timer.wrap(mod, "boom", "dpo")
    with pytest.raises(RuntimeError):
        mod.boom()
    assert timer.calls["dpo"] == 1 and timer._depth == 0  # a failing stage is timed and unwinds
