"""The verifiable-reward trap: objective scores climb while the way the model sounds gets worse.

Reasoning-style RL on verifiable rewards (correctness, WER) can raise accuracy while naturalness,
prosody and persona consistency decay, because nothing in the reward sees them (the Step-Audio
R1.5 line of work keeps the two components separate for exactly this reason). Per rollout round
we put the mean verifiable score (reward models of kind 'verifiable', latest version of each,
scores in [0, 1]) beside the mean human rating of prosody, persona consistency and naturalness
(MOS), rescaled from 1-5 to [0, 1]. A step between consecutive rounds is flagged when the first
rises by at least ``verifiable_rise`` while the second falls by at least ``human_fall``; so is
the whole series, first round to last.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

HUMAN_DIMENSIONS = ("prosody", "persona_consistency", "naturalness")  # naturalness = MOS
HUMAN_SCALE = (1.0, 5.0)


@dataclass
class TrapResult:
    rounds: list[dict[str, Any]]  # round, verifiable, human, per-dimension means, counts
    steps: list[dict[str, Any]]  # consecutive rounds with both indexes: deltas and flag
    flagged: bool
    message: str
    overall: dict[str, Any] = field(default_factory=dict)


def verifiable_by_round(session: Session, policy: str, regimes: Sequence[str] = ()) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"policy": policy}
    regime_sql = ""
    if regimes:
        regime_sql = "AND r.prompt_id IN (SELECT id FROM prompts WHERE regime = ANY(:regimes))"
        params["regimes"] = list(regimes)
    q = f"""
        SELECT r.round, rm.name || '/' || rs.dimension AS dimension, avg(rs.score) AS mean, count(*) AS n
        FROM reward_scores rs JOIN rollouts r ON r.id = rs.rollout_id JOIN policies p ON p.id = r.policy_id
        JOIN reward_models rm ON rm.id = rs.reward_model_id
        WHERE p.name = :policy AND rm.kind = 'verifiable'
          AND rm.id IN (SELECT max(id) FROM reward_models GROUP BY name) {regime_sql}
        GROUP BY 1, 2 ORDER BY 1, 2"""
    return [dict(r) for r in session.execute(text(q), params).mappings()]


def human_by_round(session: Session, policy: str, regimes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Mean human rating per round and dimension, from raters cleared for aggregation, on real
    (not gold) items; an item's round is its first rollout's."""
    params: dict[str, Any] = {"policy": policy}
    regime_sql = ""
    if regimes:
        regime_sql = "AND c.prompt_id IN (SELECT id FROM prompts WHERE regime = ANY(:regimes))"
        params["regimes"] = list(regimes)
    q = f"""
        SELECT r.round, d.dimension, avg(d.x) AS mean, count(*) AS n
        FROM judgments j
        JOIN comparisons c ON c.id = j.comparison_id
        JOIN rollouts r ON r.id = c.rollout_ids[1] JOIN policies p ON p.id = r.policy_id
        JOIN users u ON u.id = j.rater_id
        CROSS JOIN LATERAL (
            SELECT e.key AS dimension, (e.value #>> '{{}}')::float8 AS x FROM jsonb_each(j.ratings) e
            WHERE e.key IN ('prosody', 'persona_consistency') AND jsonb_typeof(e.value) = 'number'
            UNION ALL
            SELECT 'naturalness', (m #>> '{{}}')::float8 FROM jsonb_array_elements(
                CASE WHEN jsonb_typeof(j.ratings->'mos') = 'array' THEN j.ratings->'mos' ELSE '[]'::jsonb END) m
            WHERE jsonb_typeof(m) = 'number') d
        WHERE p.name = :policy AND NOT c.is_gold AND u.cleared_for_aggregation {regime_sql}
        GROUP BY 1, 2 ORDER BY 1, 2"""
    return [dict(r) for r in session.execute(text(q), params).mappings()]


def _scale(x: float) -> float:
    lo, hi = HUMAN_SCALE
    return (x - lo) / (hi - lo)


def assess(
    verifiable: Sequence[dict[str, Any]], human: Sequence[dict[str, Any]], *, verifiable_rise: float, human_fall: float
) -> TrapResult:
    """Per-round indexes (unweighted mean over dimensions present) and the trap flags."""
    per_round: dict[int, dict[str, Any]] = defaultdict(lambda: {"verifiable_dims": {}, "human_dims": {}, "n_human": 0})
    for r in verifiable:
        per_round[r["round"]]["verifiable_dims"][r["dimension"]] = float(r["mean"])
    for r in human:
        per_round[r["round"]]["human_dims"][r["dimension"]] = float(r["mean"])
        per_round[r["round"]]["n_human"] += int(r["n"])
    rounds = []
    for rnd in sorted(per_round):
        e = per_round[rnd]
        v, h = e["verifiable_dims"], e["human_dims"]
        rounds.append(
            {
                "round": rnd,
                "verifiable": sum(v.values()) / len(v) if v else None,
                "human": sum(_scale(x) for x in h.values()) / len(h) if h else None,
                "verifiable_dims": v,
                "human_dims": h,
                "n_human": e["n_human"],
            }
        )
    both = [r for r in rounds if r["verifiable"] is not None and r["human"] is not None]
    steps = []
    for a, b in pairwise(both):
        dv, dh = b["verifiable"] - a["verifiable"], b["human"] - a["human"]
        steps.append(
            {
                "from_round": a["round"],
                "to_round": b["round"],
                "verifiable_delta": dv,
                "human_delta": dh,
                "flagged": dv >= verifiable_rise and -dh >= human_fall,
            }
        )
    overall: dict[str, Any] = {}
    flagged = False
    if len(both) >= 2:
        dv, dh = both[-1]["verifiable"] - both[0]["verifiable"], both[-1]["human"] - both[0]["human"]
        overall = {
            "from_round": both[0]["round"],
            "to_round": both[-1]["round"],
            "verifiable_delta": dv,
            "human_delta": dh,
            "flagged": dv >= verifiable_rise and -dh >= human_fall,
        }
        flagged = overall["flagged"] or any(s["flagged"] for s in steps)
    if len(both) < 2:
        message = (
            "not enough rounds with both verifiable scores and human ratings (need 2); "
            "score rollouts with a verifiable scorer and run a rating campaign per round"
        )
    elif flagged:
        bad = [s for s in steps if s["flagged"]] or [overall]
        s = bad[-1]
        message = (
            f"verifiable-reward trap: rounds {s['from_round']}->{s['to_round']} verifiable "
            f"{s['verifiable_delta']:+.3f}, human naturalness/prosody/persona {s['human_delta']:+.3f} "
            "(0-1 scale); add human-preference reward or stop optimizing the verifiable one alone"
        )
    else:
        message = "no round where verifiable scores rose while human ratings fell beyond the thresholds"
    return TrapResult(rounds, steps, flagged, message, overall)


def trap(
    session: Session, policy: str, *, regimes: Sequence[str] = (), verifiable_rise: float, human_fall: float
) -> TrapResult:
    return assess(
        verifiable_by_round(session, policy, regimes),
        human_by_round(session, policy, regimes),
        verifiable_rise=verifiable_rise,
        human_fall=human_fall,
    )
