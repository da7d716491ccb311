"""Rater quality: gold accuracy, peer agreement, Krippendorff's alpha, and the screens that flag raters.

The metrics are pure functions over ``JudgmentRow`` lists (tested on planted data); the service
loads rows from the store and applies the one consequential decision: a rater below the gold
accuracy threshold is excluded from aggregation (``users.cleared_for_aggregation = False``) until a
reviewer clears them, in the spirit of MUSHRA post-screening (ITU-R BS.1534-3, section 4.1.2).

Screens, each naming its source:
- gold accuracy on planted items with known answers (P.808-style trapping questions);
- MUSHRA hidden reference: an assessor rating the hidden reference below 90 on more than 15% of
  items is screened out (BS.1534-3). A comparison marks its hidden reference with
  ``reason["hidden_reference"]`` = its canonical stimulus index (rollouts first, then the planted
  clips of ``reason["planted"]``, as ``CampaignService`` plants them); stored MUSHRA scores are in
  that same order whatever the rater was shown. Comparisons without one skip this check, and
  ``apply_hidden_reference_screen`` excludes the assessors it flags;
- near-zero rating variance (straight-lining) and always picking the clip shown first;
- votes improbable against the consensus: Wald's SPRT on disagreement with the leave-one-out
  majority, in the spirit of Chatbot Arena's anomalous-user detection (Chiang et al., 2024, sec. 5).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from earmark.domain.agreement import LEVELS
from earmark.domain.agreement import krippendorff_alpha as agreement_alpha
from earmark.domain.annotation import MUSHRA_HIDDEN_REF_MIN, RATING_DIMENSIONS
from earmark.security import action
from earmark.services.context import Service
from earmark.services.users import UserService
from earmark.store.models import AuditLog, Comparison, Judgment, User


@dataclass(frozen=True)
class QualityConfig:
    min_gold_accuracy: float = 0.7  # below this (on at least min_gold_items) a rater is excluded
    min_gold_items: int = 5
    zero_variance_std: float = 0.25  # every dimension's std below this = straight-lining
    min_items_for_variance: int = 8
    position_bias_share: float = 0.95  # picks the clip shown first (or second) this often
    hidden_ref_min: int = MUSHRA_HIDDEN_REF_MIN
    hidden_ref_max_fail: float = 0.15
    sprt_alpha: float = 0.01  # chance of flagging a typical rater
    sprt_beta: float = 0.05  # chance of missing a rater who votes at random
    min_peer_items: int = 5


@dataclass(frozen=True)
class JudgmentRow:
    id: int
    comparison_id: int
    campaign_id: int
    rater_id: int
    protocol: str
    choice: str | None
    preference: float | None
    ratings: dict[str, Any]
    is_gold: bool
    gold_correct: bool | None
    order: tuple[int, ...] = ()
    hidden_reference: int | None = None
    created_at: datetime | None = None
    planted: tuple[int, ...] = ()  # canonical positions of planted clips (hidden reference, anchors)


@dataclass(frozen=True)
class SprtResult:
    n: int  # votes with a decisive leave-one-out majority
    disagreements: int
    p0: float  # disagreement rate of a typical rater (the others, pooled)
    p1: float  # disagreement rate of a rater voting at random
    llr: float
    decision: str  # "flag" (improbable), "ok" (consistent) or "continue" (not enough votes yet)
    p_value: float  # one-sided binomial tail, for display


@dataclass(frozen=True)
class RaterQuality:
    user_id: int
    username: str
    cleared: bool
    judgments: int
    gold_items: int
    gold_correct: int
    peer_items: int
    peer_agreements: int
    rating_std: dict[str, float]
    first_position_share: float | None
    hidden_ref_items: int
    hidden_ref_failures: int
    sprt: SprtResult | None
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gold_accuracy(self) -> float | None:
        return self.gold_correct / self.gold_items if self.gold_items else None

    @property
    def peer_agreement(self) -> float | None:
        return self.peer_agreements / self.peer_items if self.peer_items else None

    @property
    def hidden_ref_fail_rate(self) -> float | None:
        return self.hidden_ref_failures / self.hidden_ref_items if self.hidden_ref_items else None


@dataclass(frozen=True)
class AlphaResult:
    campaign_id: int
    dimension: str  # a rating dimension, "choice", "preference", "mos", "mushra" or "cmos"
    level: str  # krippendorff level of measurement
    alpha: float | None  # None when undefined (fewer than two raters per unit, or no variation)
    units: int  # items rated by at least two raters
    raters: int


# ---- pure metrics ------------------------------------------------------------------------------
def gold_counts(rows: list[JudgmentRow]) -> dict[int, tuple[int, int]]:
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.is_gold and r.gold_correct is not None:
            out[r.rater_id][0] += 1
            out[r.rater_id][1] += int(r.gold_correct)
    return {k: (v[0], v[1]) for k, v in out.items()}


def leave_one_out_majority(rows: list[JudgmentRow]) -> dict[int, str]:
    """judgment id -> the strict-majority choice of the *other* raters on the same item."""
    by_item: dict[int, list[JudgmentRow]] = defaultdict(list)
    for r in rows:
        if r.choice is not None:
            by_item[r.comparison_id].append(r)
    out: dict[int, str] = {}
    for group in by_item.values():
        for r in group:
            others = Counter(o.choice for o in group if o.id != r.id)
            if not others:
                continue
            (top, n), *rest = others.most_common(2) + [(None, 0)]
            if n > rest[0][1]:
                out[r.id] = top  # type: ignore[assignment]
    return out


def peer_agreement(rows: list[JudgmentRow], majority: dict[int, str]) -> dict[int, tuple[int, int]]:
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.id in majority:
            out[r.rater_id][0] += 1
            out[r.rater_id][1] += int(r.choice == majority[r.id])
    return {k: (v[0], v[1]) for k, v in out.items()}


def sprt(disagree: list[bool], p0: float, p1: float, alpha: float = 0.01, beta: float = 0.05) -> SprtResult:
    """Wald's sequential probability ratio test of H1 (disagreement rate p1) against H0 (p0), in
    vote order. The lower boundary is a floor rather than a stop (a CUSUM-style restart), so an
    early honest run cannot hide later random votes; crossing the upper boundary flags for good."""
    p0 = min(max(p0, 1e-3), 1 - 1e-3)
    p1 = min(max(p1, p0 + 1e-3), 1 - 1e-3)
    upper, lower = math.log((1 - beta) / alpha), math.log(beta / (1 - alpha))
    step_d, step_a = math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
    llr, flagged = 0.0, False
    for d in disagree:
        llr = max(lower, llr + (step_d if d else step_a))
        if llr >= upper:
            flagged = True
            break
    decision = "flag" if flagged else ("ok" if llr <= lower else "continue")
    k, n = sum(disagree), len(disagree)
    from scipy.stats import binomtest

    p_value = float(binomtest(k, n, p0, alternative="greater").pvalue) if n else 1.0
    return SprtResult(n, k, round(p0, 4), round(p1, 4), round(llr, 4), decision, p_value)


def improbable_votes(rows: list[JudgmentRow], majority: dict[int, str], cfg: QualityConfig) -> dict[int, SprtResult]:
    """Per rater: is their disagreement with the consensus improbable for a typical rater?

    H0's rate is the pooled disagreement of everyone else (so one bad rater does not raise their
    own bar); H1 is a rater who ignores the audio: at least 1/2 (two clips), or well above H0."""
    seq: dict[int, list[bool]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: (r.created_at.timestamp() if r.created_at else 0.0, r.id)):
        if r.id in majority:
            seq[r.rater_id].append(r.choice != majority[r.id])
    total_n = sum(len(v) for v in seq.values())
    total_k = sum(sum(v) for v in seq.values())
    out = {}
    for rater, d in seq.items():
        n_others, k_others = total_n - len(d), total_k - sum(d)
        p0 = (k_others + 1) / (n_others + 2)  # Laplace: no others yet -> 1/2 (no evidence either way)
        p1 = max(0.5, min(0.9, p0 + 0.3))
        out[rater] = sprt(d, p0, p1, cfg.sprt_alpha, cfg.sprt_beta)
    return out


def rating_spread(rows: list[JudgmentRow]) -> dict[int, dict[str, tuple[int, float]]]:
    """Per rater and dimension (and MOS): (n, population std) of the 1-5 ratings given."""
    vals: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for dim in RATING_DIMENSIONS:
            if isinstance(r.ratings.get(dim), int | float):
                vals[r.rater_id][dim].append(float(r.ratings[dim]))
        for x in r.ratings.get("mos") or []:
            vals[r.rater_id]["mos"].append(float(x))
    return {rid: {d: (len(v), float(np.std(v))) for d, v in dims.items()} for rid, dims in vals.items()}


def first_position_share(rows: list[JudgmentRow]) -> dict[int, tuple[int, float]]:
    """Per rater: how often a decisive pairwise choice went to the clip *shown* first."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.choice in ("A", "B") and len(r.order) >= 2:
            picked = 0 if r.choice == "A" else 1  # canonical index
            counts[r.rater_id][0] += 1
            counts[r.rater_id][1] += int(r.order[0] == picked)
    return {k: (n, first / n) for k, (n, first) in counts.items()}


def hidden_reference_failures(rows: list[JudgmentRow], minimum: int) -> dict[int, tuple[int, int]]:
    out: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        scores = r.ratings.get("mushra")
        if r.hidden_reference is None or not scores or r.hidden_reference >= len(scores):
            continue
        out[r.rater_id][0] += 1
        out[r.rater_id][1] += int(scores[r.hidden_reference] < minimum)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _units(rows: list[JudgmentRow], dimension: str) -> dict[tuple[int, int], dict[int, float]]:
    """(comparison, clip) -> rater -> value, for one dimension."""
    units: dict[tuple[int, int], dict[int, float]] = defaultdict(dict)
    for r in rows:
        if dimension == "choice":
            if r.choice is not None:
                units[(r.comparison_id, 0)][r.rater_id] = float(("A", "B", "tie", "both_bad").index(r.choice))
        elif dimension == "preference":
            if r.preference is not None and r.protocol == "pairwise":
                units[(r.comparison_id, 0)][r.rater_id] = float(r.preference)
        elif dimension == "cmos":
            if r.ratings.get("cmos_canonical") is not None:
                units[(r.comparison_id, 0)][r.rater_id] = float(round(r.ratings["cmos_canonical"]))
        elif dimension in ("mos", "mushra"):
            for i, x in enumerate(r.ratings.get(dimension) or []):
                # Planted controls are agreed on by design (reference ~100, anchor low): counting
                # them would inflate agreement on the systems under test. They have their own screen.
                if i not in r.planted:
                    units[(r.comparison_id, i)][r.rater_id] = float(x)
        elif isinstance(r.ratings.get(dimension), int | float):
            units[(r.comparison_id, 0)][r.rater_id] = float(r.ratings[dimension])
    return units


def krippendorff_alpha(rows: list[JudgmentRow], dimension: str, campaign_id: int = 0) -> AlphaResult:
    """Krippendorff's alpha over raters x items (missing = NaN), unrounded: ordinal for 1-5 scales,
    nominal for choices, interval for MUSHRA's 0-100 (``earmark.domain.agreement``)."""
    units = {u: v for u, v in _units(rows, dimension).items() if len(v) >= 2}
    level = LEVELS.get(dimension, "ordinal")
    raters = sorted({rid for v in units.values() for rid in v})
    if not units or len(raters) < 2:
        return AlphaResult(campaign_id, dimension, level, None, len(units), len(raters))
    keys = sorted(units)
    data = np.full((len(raters), len(keys)), np.nan)
    for j, key in enumerate(keys):
        for rid, x in units[key].items():
            data[raters.index(rid), j] = x
    a = agreement_alpha(dimension, reliability_data=data)
    return AlphaResult(campaign_id, dimension, level, a, len(keys), len(raters))


def assess(rows: list[JudgmentRow], users: dict[int, tuple[str, bool]], cfg: QualityConfig) -> list[RaterQuality]:
    """Every rater's metrics and flags; ``users`` maps id -> (username, cleared)."""
    gold = gold_counts(rows)
    majority = leave_one_out_majority([r for r in rows if not r.is_gold])
    peers = peer_agreement(rows, majority)
    tests = improbable_votes(rows, majority, cfg)
    spread = rating_spread(rows)
    position = first_position_share(rows)
    hidden = hidden_reference_failures(rows, cfg.hidden_ref_min)
    n_judged = Counter(r.rater_id for r in rows)
    out = []
    for rid in sorted(n_judged):
        name, cleared = users.get(rid, (f"user {rid}", True))
        flags = []
        g_n, g_ok = gold.get(rid, (0, 0))
        if g_n >= cfg.min_gold_items and g_ok / g_n < cfg.min_gold_accuracy:
            flags.append("low_gold_accuracy")
        dims = {d: s for d, (n, s) in spread.get(rid, {}).items() if n >= cfg.min_items_for_variance}
        if dims and all(s < cfg.zero_variance_std for s in dims.values()):
            flags.append("near_zero_variance")
        pos = position.get(rid)
        if pos and pos[0] >= cfg.min_items_for_variance and max(pos[1], 1 - pos[1]) >= cfg.position_bias_share:
            flags.append("position_bias")
        h_n, h_bad = hidden.get(rid, (0, 0))
        if h_n and h_bad / h_n > cfg.hidden_ref_max_fail:
            flags.append("hidden_reference")
        test = tests.get(rid)
        if test and test.decision == "flag":
            flags.append("improbable_votes")
        p_n, p_ok = peers.get(rid, (0, 0))
        out.append(
            RaterQuality(
                rid,
                name,
                cleared,
                n_judged[rid],
                g_n,
                g_ok,
                p_n,
                p_ok,
                {d: round(s, 3) for d, (_n, s) in spread.get(rid, {}).items()},
                None if pos is None else round(pos[1], 3),
                h_n,
                h_bad,
                test,
                tuple(flags),
            )
        )
    return out


# ---- service -----------------------------------------------------------------------------------
class QualityService(Service):
    @action("judgments.review")
    def rows(self, campaign_id: int | None = None) -> list[JudgmentRow]:
        self.ctx.require("judgments.review")
        q = (
            select(
                Judgment.id,
                Judgment.comparison_id,
                Judgment.campaign_id,
                Judgment.rater_id,
                Judgment.protocol,
                Judgment.choice,
                Judgment.preference,
                Judgment.ratings,
                Judgment.is_gold,
                Judgment.gold_correct,
                Judgment.presentation,
                Comparison.reason,
                Judgment.created_at,
            )
            .join(Comparison, Comparison.id == Judgment.comparison_id)
            .order_by(Judgment.id)
        )
        if campaign_id is not None:
            q = q.where(Judgment.campaign_id == campaign_id)
        out = []
        for r in self.ctx.tx(lambda s: s.execute(q).all()):
            order = tuple((r.presentation or {}).get("order") or ())
            ref = (r.reason or {}).get("hidden_reference")
            ref = ref if isinstance(ref, int) else None
            anchors = [a for a in (r.reason or {}).get("anchors") or [] if isinstance(a, int)]
            out.append(
                JudgmentRow(
                    r.id,
                    r.comparison_id,
                    r.campaign_id,
                    r.rater_id,
                    r.protocol,
                    r.choice,
                    r.preference,
                    r.ratings or {},
                    r.is_gold,
                    r.gold_correct,
                    order,
                    ref,
                    r.created_at,
                    tuple(([ref] if ref is not None else []) + anchors),
                )
            )
        return out

    def _users(self) -> dict[int, tuple[str, bool]]:
        rows = self.ctx.tx(lambda s: s.execute(select(User.id, User.username, User.cleared_for_aggregation)).all())
        return {i: (n, c) for i, n, c in rows}

    @action("judgments.review")
    def rater_report(self, campaign_id: int | None = None, config: QualityConfig | None = None) -> list[RaterQuality]:
        """Per-rater metrics and flags, for one campaign or (gold accuracy is a rater's, not a
        campaign's, property) across all of them."""
        return assess(self.rows(campaign_id), self._users(), config or QualityConfig())

    @action("judgments.review")
    def flagged(self, campaign_id: int | None = None, config: QualityConfig | None = None) -> list[RaterQuality]:
        return [q for q in self.rater_report(campaign_id, config) if q.flags or not q.cleared]

    @action("dashboard.view")
    def agreement(self, campaign_id: int) -> list[AlphaResult]:
        """Krippendorff's alpha per dimension of the campaign (dimensions with data only)."""
        rows = self.rows(campaign_id)
        if not rows:
            return []
        present: set[str] = set()
        for r in rows:
            present.update(k for k in r.ratings if k in LEVELS)
            if r.choice is not None:
                present.add("choice")
            if r.preference is not None and r.protocol == "pairwise":
                present.add("preference")
            if "cmos_canonical" in r.ratings:
                present.add("cmos")
        dims = [d for d in LEVELS if d in present]
        return [krippendorff_alpha(rows, d, campaign_id) for d in dims]

    @action("judgments.review")
    def apply_gold_flags(self, config: QualityConfig | None = None) -> list[RaterQuality]:
        """Exclude raters below the gold accuracy threshold from aggregation; returns those excluded now.

        A reviewer's clearance stands until the rater answers another gold item: new evidence
        below the threshold excludes them again, old evidence does not undo a human decision."""
        cfg = config or QualityConfig()
        return self._exclude_flagged(
            "low_gold_accuracy",
            Judgment.is_gold,
            cfg,
            lambda q: (
                f"gold accuracy {q.gold_accuracy:.2f} on {q.gold_items} gold items is below {cfg.min_gold_accuracy:.2f}"
            ),
        )

    @action("judgments.review")
    def apply_hidden_reference_screen(self, config: QualityConfig | None = None) -> list[RaterQuality]:
        """MUSHRA post-screening (BS.1534-3): exclude assessors who rated the hidden reference below
        ``hidden_ref_min`` on more than ``hidden_ref_max_fail`` of their items; returns those excluded
        now. Clearance by a reviewer stands until the rater rates another item with a hidden reference."""
        cfg = config or QualityConfig()
        return self._exclude_flagged(
            "hidden_reference",
            Comparison.reason.op("?")("hidden_reference"),
            cfg,
            lambda q: (
                f"rated the hidden reference below {cfg.hidden_ref_min} on "
                f"{q.hidden_ref_failures} of {q.hidden_ref_items} items "
                f"(more than {cfg.hidden_ref_max_fail:.0%})"
            ),
        )

    def _exclude_flagged(self, flag: str, evidence: Any, cfg: QualityConfig, why: Any) -> list[RaterQuality]:
        report = self.rater_report(None, cfg)
        low = [q for q in report if flag in q.flags and q.cleared]
        if not low:
            return []

        def last_times(s: Session) -> tuple[dict[int, datetime], dict[int, datetime]]:
            ids = [q.user_id for q in low]
            gold = dict(
                s.execute(
                    select(Judgment.rater_id, func.max(Judgment.created_at))
                    .join(Comparison, Comparison.id == Judgment.comparison_id)
                    .where(evidence, Judgment.rater_id.in_(ids))
                    .group_by(Judgment.rater_id)
                ).all()
            )
            cleared = {
                int(str(e)): t
                for e, t in s.execute(
                    select(AuditLog.entity_id, func.max(AuditLog.at))
                    .where(
                        AuditLog.action == "raters.clear",
                        AuditLog.entity == "user",
                        AuditLog.entity_id.in_([str(i) for i in ids]),
                    )
                    .group_by(AuditLog.entity_id)
                ).all()
            }
            return gold, cleared

        gold_at, cleared_at = self.ctx.tx(last_times)
        users = UserService(self.ctx)
        excluded = []
        for q in low:
            if q.user_id in cleared_at and q.user_id in gold_at and cleared_at[q.user_id] >= gold_at[q.user_id]:
                continue
            users.set_cleared(q.user_id, False, note=why(q))
            excluded.append(q)
        return excluded

    @action("judgments.review")
    def clear(self, user_id: int, note: str = "") -> None:
        """A reviewer readmits a rater's judgments to aggregation."""
        UserService(self.ctx).set_cleared(user_id, True, note=note)

    @action("judgments.review")
    def exclude(self, user_id: int, note: str = "") -> None:
        UserService(self.ctx).set_cleared(user_id, False, note=note)
