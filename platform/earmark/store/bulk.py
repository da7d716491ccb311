"""Bulk ingest through PostgreSQL COPY into a staging table, then one INSERT ... ON CONFLICT DO NOTHING.

Why staging: COPY cannot skip conflicting rows, and a retried Ray task must be a no-op, not an
error that aborts the batch. COPY into an unlogged temp table is nearly free; the single set-based
INSERT then applies the unique keys (the exactly-once guarantee) at set speed.

These functions run inside the caller's transaction (they take a Session and never commit).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from earmark.domain.records import RolloutCreate, ScoreCreate


def _driver_connection(session: Session) -> Any:
    return session.connection().connection.driver_connection


def _copy_rows(session: Session, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    conn = _driver_connection(session)
    n = 0
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)


SCORE_STAGE_DDL = """
CREATE TEMP TABLE {name} (
  rollout_id bigint, reward_model_id bigint, dimension text, score float8, rationale text, features text
) ON COMMIT DROP
"""


def ingest_scores(session: Session, scores: Iterable[ScoreCreate | tuple[Any, ...]]) -> int:
    """Insert scores; rows whose (rollout, reward model, dimension) exists are skipped. Returns rows added.

    Accepts validated ``ScoreCreate`` models or pre-validated tuples
    ``(rollout_id, reward_model_id, dimension, score, rationale, features_dict)`` for hot paths.
    """
    stage = f"stage_scores_{uuid.uuid4().hex[:12]}"
    session.execute(text(SCORE_STAGE_DDL.format(name=stage)))

    def rows() -> Iterable[tuple[Any, ...]]:
        for s in scores:
            if isinstance(s, ScoreCreate):
                yield (s.rollout_id, s.reward_model_id, s.dimension, s.score, s.rationale, _json(s.features))
            else:
                yield (*s[:5], _json(s[5]))

    if (
        _copy_rows(
            session, stage, ("rollout_id", "reward_model_id", "dimension", "score", "rationale", "features"), rows()
        )
        == 0
    ):
        return 0
    result = session.execute(
        text(f"""
        INSERT INTO reward_scores (rollout_id, reward_model_id, dimension, score, rationale, features)
        SELECT rollout_id, reward_model_id, dimension, score, rationale, features::jsonb FROM {stage}
        ON CONFLICT (rollout_id, reward_model_id, dimension) DO NOTHING
    """)
    )
    session.execute(text(f"DROP TABLE {stage}"))
    return result.rowcount or 0  # type: ignore[attr-defined]  # a CursorResult at runtime


ROLLOUT_COLUMNS = (
    "prompt_id",
    "policy_id",
    "round",
    "sample_index",
    "messages",
    "text",
    "token_ids",
    "audio_sha256",
    "duration_s",
    "ttfa_s",
    "total_s",
    "sampling",
    "seed",
    "tool_calls",
    "timeline",
)
ROLLOUT_STAGE_DDL = """
CREATE TEMP TABLE {name} (
  prompt_id bigint, policy_id bigint, round int, sample_index int, messages text, text text,
  token_ids int[], audio_sha256 text, duration_s float8, ttfa_s float8, total_s float8, sampling text,
  seed bigint, tool_calls text, timeline text
) ON COMMIT DROP
"""


def ingest_rollouts(session: Session, rollouts: Iterable[RolloutCreate]) -> dict[tuple[int, int, int, int], int]:
    """Insert rollouts exactly once; returns {(prompt, policy, sample_index, round): id} for every row
    sent, whether it was new or already stored (so a retry learns the ids it wrote before)."""
    stage = f"stage_rollouts_{uuid.uuid4().hex[:12]}"
    session.execute(text(ROLLOUT_STAGE_DDL.format(name=stage)))

    def rows() -> Iterable[tuple[Any, ...]]:
        for r in rollouts:
            yield (
                r.prompt_id,
                r.policy_id,
                r.round,
                r.sample_index,
                _json(r.messages),
                r.text,
                r.token_ids,
                r.audio_sha256,
                r.duration_s,
                r.ttfa_s,
                r.total_s,
                _json(r.sampling),
                r.seed,
                _json([t.model_dump() for t in r.tool_calls] if r.tool_calls is not None else None),
                _json(r.timeline),
            )

    if _copy_rows(session, stage, ROLLOUT_COLUMNS, rows()) == 0:
        return {}
    session.execute(
        text(f"""
        INSERT INTO rollouts (prompt_id, policy_id, round, sample_index, messages, text, token_ids, audio_sha256,
                              duration_s, ttfa_s, total_s, sampling, seed, tool_calls, timeline)
        SELECT prompt_id, policy_id, round, sample_index, messages::jsonb, text, token_ids, audio_sha256,
               duration_s, ttfa_s, total_s, sampling::jsonb, seed, tool_calls::jsonb, timeline::jsonb
        FROM {stage}
        ON CONFLICT (prompt_id, policy_id, sample_index, round) DO NOTHING
    """)
    )
    ids = session.execute(
        text(f"""
        SELECT r.prompt_id, r.policy_id, r.sample_index, r.round, r.id FROM rollouts r
        JOIN {stage} s USING (prompt_id, policy_id, sample_index, round)
    """)
    ).all()
    session.execute(text(f"DROP TABLE {stage}"))
    return {(p, pol, si, rd): rid for p, pol, si, rd, rid in ids}
