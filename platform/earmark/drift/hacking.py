"""Reward-hacking signals: rewards that follow length, judges that drift from humans, over-optimization.

- Length/duration correlation: a reward that tracks how long the answer is rather than what it
  says is the classic exploit (Singhal et al., 2023, "A Long Way to Go: Investigating Length
  Correlations in RLHF"). Correlations come from PostgreSQL's corr() in the drift summary; the
  signal fires when the candidate's correlation is high *and* rose over the baseline's, so a
  reward that was always mildly length-aware does not alert on every report. That alert is part of
  the drift summary itself (``earmark.drift.report.correlation_alerts``).
- Generative judge vs humans over time: on pairwise judgments, how often the judge's score
  difference has the sign of the human preference, per time window; a falling trend means the
  judge (or the policy it scores) has drifted away from what raters hear.
- Over-optimization picture (Gao, Schulman & Hilton, 2023, "Scaling Laws for Reward Model
  Overoptimization"): per policy version, KL from the reference, proxy reward, human win rate.
  Proxy up while humans go flat or down is the shape to look for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from earmark.drift.report import Alert, Thresholds

# Where a policy version's KL from the reference is read, first match wins: the summary of the
# training run that produced it, then the policy's own config (for versions trained elsewhere).
KL_KEYS = ("kl_ref", "kl")


def judge_agreement(
    session: Session, *, hours: int, policy: str | None = None, regimes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Per generative reward model version, dimension and window: pairs judged and the share where
    sign(score A - score B) equals the sign of the human preference. Ties on either side are
    left out (no direction to agree with); gold items are planted, not real comparisons."""
    where: list[str]
    params: dict[str, Any]
    where, params = (
        [
            "cardinality(c.rollout_ids) = 2",
            "NOT c.is_gold",
            "j.preference IS NOT NULL",
            "j.preference <> 0",
            "sa.score <> sb.score",
        ],
        {"width": f"{int(hours)} hours"},
    )
    joins = ""
    if policy or regimes:
        joins = (
            "JOIN rollouts ra ON ra.id = c.rollout_ids[1] JOIN policies p ON p.id = ra.policy_id "
            "JOIN prompts pr ON pr.id = c.prompt_id"
        )
        if policy:
            where.append("p.name = :policy")
            params["policy"] = policy
        if regimes:
            where.append("pr.regime = ANY(:regimes)")
            params["regimes"] = list(regimes)
    q = f"""
        SELECT rm.id AS rm_id, rm.name, rm.version, sa.dimension,
               date_bin(CAST(:width AS interval), j.created_at, TIMESTAMPTZ '2000-01-01') AS window_start,
               count(*) AS n,
               avg(CASE WHEN sign(sa.score - sb.score) = sign(j.preference) THEN 1.0 ELSE 0.0 END) AS agreement
        FROM judgments j
        JOIN comparisons c ON c.id = j.comparison_id
        JOIN reward_scores sa ON sa.rollout_id = c.rollout_ids[1]
        JOIN reward_scores sb ON sb.rollout_id = c.rollout_ids[2] AND sb.reward_model_id = sa.reward_model_id
                             AND sb.dimension = sa.dimension
        JOIN reward_models rm ON rm.id = sa.reward_model_id AND rm.kind = 'generative'
        {joins}
        WHERE {" AND ".join(where)}
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 2, 3, 4, 5"""
    return [dict(r, agreement=float(r["agreement"])) for r in session.execute(text(q), params).mappings()]


def agreement_alerts(rows: Sequence[dict[str, Any]], th: Thresholds) -> list[Alert]:
    """A warning per judge dimension whose latest window (with enough pairs) is below the floor."""
    latest: dict[tuple[int, str], dict[str, Any]] = {}
    first: dict[tuple[int, str], dict[str, Any]] = {}
    for r in rows:
        if r["n"] < th.min_samples:
            continue
        key = (r["rm_id"], r["dimension"])
        first.setdefault(key, r)
        latest[key] = r
    out = []
    for key, r in latest.items():
        if r["agreement"] < th.judge_agreement_min:
            start = first[key]["agreement"]
            out.append(
                Alert(
                    "judge_agreement",
                    "warning",
                    "agreement",
                    round(r["agreement"], 4),
                    th.judge_agreement_min,
                    f"{r['name']}@{r['version']}/{r['dimension']}: judge agrees with humans on "
                    f"{r['agreement']:.0%} of {r['n']} pairs in the latest window (first window "
                    f"{start:.0%}); re-validate the judge before trusting its reward",
                    reward_model_id=key[0],
                    dimension=key[1],
                    details={"window_start": r["window_start"].isoformat(), "first": start},
                )
            )
    return out


def _kl_expr() -> str:
    def num(col: str, key: str) -> str:
        return f"CASE WHEN jsonb_typeof({col}->'{key}') = 'number' THEN ({col}->>'{key}')::float8 END"

    parts = [num("tr.summary", k) for k in KL_KEYS] + [num("p.config", k) for k in KL_KEYS]
    return f"coalesce({', '.join(parts)})"


def overoptimization(session: Session, policy: str, *, regimes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per policy version: KL from the reference (None when not recorded) and the mean of every
    reward dimension, each from the latest version of its reward model so versions are compared
    on the same scorer."""
    params: dict[str, Any] = {"policy": policy}
    regime_join, regime_where = "", ""
    if regimes:
        regime_join = "JOIN prompts pr ON pr.id = r.prompt_id"
        regime_where = "AND pr.regime = ANY(:regimes)"
        params["regimes"] = list(regimes)
    versions = session.execute(
        text(f"""
        SELECT p.version, {_kl_expr()} AS kl FROM policies p LEFT JOIN training_runs tr ON tr.id = p.training_run_id
        WHERE p.name = :policy ORDER BY p.version"""),
        params,
    ).all()
    means = session.execute(
        text(f"""
        SELECT p.version, rm.name, rm.kind, rs.dimension, avg(rs.score) AS mean, count(*) AS n
        FROM reward_scores rs JOIN rollouts r ON r.id = rs.rollout_id JOIN policies p ON p.id = r.policy_id
        JOIN reward_models rm ON rm.id = rs.reward_model_id {regime_join}
        WHERE p.name = :policy {regime_where}
          AND rm.id IN (SELECT max(id) FROM reward_models GROUP BY name)
        GROUP BY 1, 2, 3, 4"""),
        params,
    ).all()
    out = {v: {"version": v, "kl": kl, "rewards": {}} for v, kl in versions}
    for v, name, kind, dim, mean, n in means:
        out[v]["rewards"][f"{name}/{dim}"] = {"mean": float(mean), "n": n, "kind": kind}
    return list(out.values())
