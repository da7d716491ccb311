"""Rater-quality metrics on planted data: the answers are known, so the metrics must find them."""

from __future__ import annotations

import random

import krippendorff
import numpy as np
import pytest

from earmark.services.quality import (
    JudgmentRow,
    QualityConfig,
    assess,
    gold_counts,
    krippendorff_alpha,
    leave_one_out_majority,
    peer_agreement,
    sprt,
)

DIMS = ("prosody", "persona_consistency", "correctness")
_ids = iter(range(1, 10**9))


def row(
    rater: int,
    item: int,
    *,
    choice: str | None = None,
    ratings: dict | None = None,
    gold: bool | None = None,
    order: tuple[int, ...] = (0, 1),
    hidden_reference: int | None = None,
    protocol: str = "pairwise",
) -> JudgmentRow:
    return JudgmentRow(
        next(_ids),
        item,
        1,
        rater,
        protocol,
        choice,
        None,
        ratings or {},
        gold is not None,
        gold,
        order,
        hidden_reference,
    )


def users(*ids: int) -> dict[int, tuple[str, bool]]:
    return {i: (f"r{i}", True) for i in ids}


def test_gold_accuracy_and_the_low_gold_flag() -> None:
    rows = [row(1, 100 + i, choice="A", gold=i < 9) for i in range(10)]  # 9 of 10 right
    rows += [row(2, 200 + i, choice="B", gold=i < 4) for i in range(10)]  # 4 of 10 right
    rows += [row(3, 300 + i, choice="A", gold=i < 2) for i in range(4)]  # 2 of 4: too few gold items to judge
    assert gold_counts(rows) == {1: (10, 9), 2: (10, 4), 3: (4, 2)}
    report = {q.user_id: q for q in assess(rows, users(1, 2, 3), QualityConfig())}
    assert report[1].gold_accuracy == pytest.approx(0.9) and "low_gold_accuracy" not in report[1].flags
    assert report[2].gold_accuracy == pytest.approx(0.4) and "low_gold_accuracy" in report[2].flags
    assert "low_gold_accuracy" not in report[3].flags  # min_gold_items = 5
    assert (
        "low_gold_accuracy"
        in {
            q.user_id: q for q in assess(rows, users(1, 2, 3), QualityConfig(min_gold_items=3, min_gold_accuracy=0.95))
        }[1].flags
    )


def _matrix_rows(data: np.ndarray, dim: str) -> list[JudgmentRow]:
    return [
        row(r, u, ratings={dim: int(data[r, u])})
        for r in range(data.shape[0])
        for u in range(data.shape[1])
        if not np.isnan(data[r, u])
    ]


def test_alpha_equals_krippendorff_package_on_the_same_matrix() -> None:
    rng = np.random.default_rng(7)
    truth = rng.integers(1, 6, size=12)
    data = np.array([np.clip(truth + rng.integers(-1, 2, size=12), 1, 5) for _ in range(4)], dtype=float)
    data[0, 3] = data[2, 7] = data[3, 0] = np.nan  # missing judgments
    ours = krippendorff_alpha(_matrix_rows(data, "prosody"), "prosody")
    theirs = krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal", value_domain=[1, 2, 3, 4, 5])
    assert ours.level == "ordinal" and ours.units == 12 and ours.raters == 4
    assert ours.alpha == pytest.approx(theirs, abs=1e-4) and ours.alpha > 0.5

    choices = ["A", "B", "tie", "both_bad"]
    nominal = np.array([[0, 1, 1, 0, 2, 0], [0, 1, 0, 0, 2, 1], [0, 1, 1, 0, 3, 1]], dtype=float)
    rows = [row(r, u, choice=choices[int(nominal[r, u])]) for r in range(3) for u in range(6)]
    expected = krippendorff.alpha(reliability_data=nominal, level_of_measurement="nominal", value_domain=[0, 1, 2, 3])
    assert krippendorff_alpha(rows, "choice").alpha == pytest.approx(expected, abs=1e-4)


def test_alpha_is_undefined_without_overlap_or_variation() -> None:
    assert (
        krippendorff_alpha([row(1, 1, ratings={"prosody": 3}), row(2, 2, ratings={"prosody": 4})], "prosody").alpha
        is None
    )
    same = [row(r, u, ratings={"correctness": 4}) for r in (1, 2) for u in range(5)]
    assert krippendorff_alpha(same, "correctness").alpha in (None, 1.0)


def _crowd(seed: int = 0, items: int = 40) -> list[JudgmentRow]:
    """Five careful raters (90% on the true answer) and one who votes at random (rater 9)."""
    rng = random.Random(seed)
    rows = []
    for item in range(items):
        truth = rng.choice("AB")
        other = "B" if truth == "A" else "A"
        for rater in (1, 2, 3, 4, 5):
            rows.append(row(rater, item, choice=truth if rng.random() < 0.9 else other))
        rows.append(row(9, item, choice=rng.choice("AB")))
    return rows


def test_peer_agreement_and_improbable_votes_flag_the_random_voter() -> None:
    rows = _crowd()
    majority = leave_one_out_majority(rows)
    agree = peer_agreement(rows, majority)
    careful = [agree[r][1] / agree[r][0] for r in (1, 2, 3, 4, 5)]
    assert min(careful) > 0.75 and agree[9][1] / agree[9][0] < 0.7
    report = {q.user_id: q for q in assess(rows, users(1, 2, 3, 4, 5, 9), QualityConfig())}
    assert "improbable_votes" in report[9].flags and report[9].sprt.decision == "flag"
    assert report[9].sprt.p_value < 0.01
    assert all("improbable_votes" not in report[r].flags for r in (1, 2, 3, 4, 5))


def test_sprt_boundaries() -> None:
    assert sprt([True] * 10, p0=0.1, p1=0.5).decision == "flag"
    assert sprt([False] * 30, p0=0.1, p1=0.5).decision == "ok"
    assert sprt([], p0=0.1, p1=0.5).decision == "continue"
    # an early honest run does not hide later random voting (the lower boundary is a floor)
    assert sprt([False] * 200 + [True, False] * 15, p0=0.1, p1=0.5).decision == "flag"


def test_near_zero_variance_and_position_bias() -> None:
    rows = [row(1, i, choice="A", ratings={d: 3 for d in DIMS}, order=(0, 1)) for i in range(10)]  # straight-liner
    rows += [
        row(
            2,
            i,
            choice="A" if i % 2 else "B",
            order=(0, 1) if i % 2 else (1, 0),
            ratings={d: 1 + (i + j) % 5 for j, d in enumerate(DIMS)},
        )
        for i in range(10)
    ]  # always shown-first
    rows += [
        row(
            3,
            i,
            choice="AB"[i % 2],
            order=(0, 1) if i % 3 else (1, 0),
            ratings={d: 1 + (i * (j + 2)) % 5 for j, d in enumerate(DIMS)},
        )
        for i in range(10)
    ]
    report = {q.user_id: q for q in assess(rows, users(1, 2, 3), QualityConfig())}
    assert "near_zero_variance" in report[1].flags and report[1].rating_std["prosody"] == 0
    assert "position_bias" in report[1].flags and report[1].first_position_share == 1.0
    assert "position_bias" in report[2].flags and "near_zero_variance" not in report[2].flags
    assert report[3].flags == ()


def test_mushra_hidden_reference_screen() -> None:
    def trials(rater: int, low: int) -> list[JudgmentRow]:
        return [
            row(rater, i, protocol="mushra", hidden_reference=1, ratings={"mushra": [40, 70 if i < low else 100, 20]})
            for i in range(10)
        ]

    rows = trials(1, 2) + trials(2, 1)  # 20% and 10% of items below 90
    rows += [row(3, i, protocol="mushra", ratings={"mushra": [40, 50, 20]}) for i in range(10)]  # no hidden reference
    report = {q.user_id: q for q in assess(rows, users(1, 2, 3), QualityConfig())}
    assert "hidden_reference" in report[1].flags and report[1].hidden_ref_fail_rate == pytest.approx(0.2)
    assert "hidden_reference" not in report[2].flags and report[2].hidden_ref_fail_rate == pytest.approx(0.1)
    assert report[3].hidden_ref_items == 0 and "hidden_reference" not in report[3].flags
