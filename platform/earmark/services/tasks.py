"""Task serving on short leases: claim, heartbeat, release, submit. Nothing lost, nothing twice.

- claim: ``FOR UPDATE SKIP LOCKED`` hands disjoint tasks to concurrent raters without waiting. A
  lease lasts ``lease_seconds`` (minutes) and a heartbeat renews it while the rater works; an expired
  lease is simply claimable again. A rater is never handed an item they judged or hold.
- submit: idempotent on ``submission_id`` (a double click or a resubmit after a lost response
  returns the stored judgment). A late submission is kept if nobody else took the slot, otherwise
  refused with a clear message. The unique keys (task_id) and (comparison_id, rater_id) are the
  last line: no race can store two judgments for one slot or one rater twice on an item.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from earmark.domain.annotation import JudgmentSubmit, canonical, gold_correct, planted_of, validate_for_protocol
from earmark.domain.enums import Protocol
from earmark.domain.messages import content_text
from earmark.errors import Conflict, InvalidInput, LeaseExpired, NotFound
from earmark.security import action
from earmark.services.annotation_timeline import (
    STEREO,
    TRACKS,
    TimelineView,
    check_event_onsets,
    parse_timeline,
    render_stereo,
    timeline_view,
)
from earmark.services.context import Service
from earmark.store.models import Campaign, Comparison, Judgment, Rollout, Task

PREFETCH = 2  # the task on screen plus the next one, prepared while the rater works
LEASE_GONE = "this item is no longer leased to you; load the next item"


@dataclass(frozen=True)
class Lease:
    task_id: int
    lease_token: uuid.UUID
    expires_at: datetime
    comparison_id: int
    campaign_id: int
    order: list[int]  # presentation order of the comparison's rollouts


@dataclass(frozen=True)
class SubmitResult:
    judgment_id: int
    duplicate: bool
    late: bool
    gold_correct: bool | None


@dataclass(frozen=True)
class Stimulus:
    label: str  # "A", "B", ... in presentation order; never a model, policy or score
    audio_sha256: str | None
    transcript: str
    duration_s: float | None


@dataclass(frozen=True)
class RaterItem:
    """Everything a rater may see of one task, and nothing else."""

    task_id: int
    lease_token: uuid.UUID
    expires_at: datetime
    protocol: str
    dimensions: list[str]
    instructions: str
    persona: dict[str, Any] | None  # display name, description, style: the card the response must fit
    conversation: list[dict[str, str]]  # prompt turns as {"role", "text", "audio_sha256"}
    stimuli: list[Stimulus]
    # MUSHRA with a reference: the open reference the clips are scored against. Its hidden copy
    # and the low anchor are among ``stimuli`` under ordinary labels, indistinguishable by design.
    reference: Stimulus | None = None


# One statement per call, run on its own (autocommit: a statement is atomic): the rater's live
# leases in this open campaign, plus one new lease when they hold fewer than :want. The new one is
# the lowest open slot (items complete before new ones start) whose item this rater has not judged
# or held or skipped, in the configured serving order, skipping rows other raters are locking; a
# campaign assigned to rater groups serves only their members. The order in which its stimuli are shown (blind
# A/B) is the task's, drawn from the campaign's seed when the campaign was made (reproducible); a task
# without one (made before orders were drawn at creation) gets a random one here, recorded on it. The
# order covers the rollouts and any planted stimuli (MUSHRA hidden reference and anchor), so those land
# at random positions too.
_CLAIM_SQL = """
WITH camp AS (
  SELECT id FROM campaigns WHERE id = :c AND status = 'open'
    AND (NOT EXISTS (SELECT 1 FROM campaign_groups g WHERE g.campaign_id = :c)
         OR EXISTS (SELECT 1 FROM campaign_groups g JOIN rater_group_members m ON m.group_id = g.group_id
                    WHERE g.campaign_id = :c AND m.user_id = :r))
), held AS (
  SELECT t.id, t.lease_token, t.lease_expires_at, t.comparison_id, t.campaign_id, t.presentation
  FROM tasks t JOIN camp ON camp.id = t.campaign_id
  WHERE t.leased_by = :r AND t.status = 'leased' AND t.lease_expires_at > now()
), cand AS (
  SELECT t.id FROM tasks t JOIN camp ON camp.id = t.campaign_id
  WHERE t.status <> 'done'
    AND (t.status = 'open' OR t.lease_expires_at <= now())
    AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.comparison_id = t.comparison_id AND j.rater_id = :r)
    AND t.comparison_id NOT IN (SELECT comparison_id FROM held)
    AND NOT EXISTS (SELECT 1 FROM task_skips s WHERE s.rater_id = :r AND s.comparison_id = t.comparison_id)
  ORDER BY {order}
  LIMIT (CASE WHEN (SELECT count(*) FROM held) < :want THEN 1 ELSE 0 END)
  FOR UPDATE OF t SKIP LOCKED
), claimed AS (
  UPDATE tasks t SET status = 'leased', leased_by = :r, lease_token = :token, attempts = t.attempts + 1,
    lease_expires_at = now() + make_interval(secs => :lease_s),
    presentation = COALESCE(t.presentation, (
      SELECT jsonb_build_object('order', jsonb_agg(i ORDER BY random()))
      FROM comparisons c, generate_series(0, cardinality(c.rollout_ids)
                                             + jsonb_array_length(COALESCE(c.reason->'planted', '[]')) - 1) AS i
      WHERE c.id = t.comparison_id))
  FROM cand WHERE t.id = cand.id
  RETURNING t.id, t.lease_token, t.lease_expires_at, t.comparison_id, t.campaign_id, t.presentation
)
SELECT * FROM held UNION ALL SELECT * FROM claimed ORDER BY lease_expires_at
"""
# Serving order (EARMARK_SERVING_ORDER): depth-first finishes an item's k slots before opening the
# next item; breadth-first gives every item its first judgment before any gets its second.
CLAIM_SQL_BY_ORDER = {
    "depth_first": text(_CLAIM_SQL.replace("{order}", "t.comparison_id, t.slot, t.id")),
    "breadth_first": text(_CLAIM_SQL.replace("{order}", "t.slot, t.id")),
}
CLAIM_SQL = CLAIM_SQL_BY_ORDER["depth_first"]
# Everything a rater's view of an item needs, in one read, and only while the caller holds the lease.
ITEM_SQL = text("""
SELECT t.id, t.lease_token, t.lease_expires_at, c.rollout_ids, c.reason, k.protocol, k.dimensions, k.instructions,
       p.messages, pe.card,
       (SELECT jsonb_object_agg(r.id, jsonb_build_object('sha', r.audio_sha256, 'text', r.text))
          FROM rollouts r WHERE r.id = ANY(c.rollout_ids)) AS rollouts,
       (SELECT jsonb_object_agg(b.sha256, b.duration_s) FROM blobs b WHERE b.sha256 IN (
          SELECT r.audio_sha256 FROM rollouts r WHERE r.id = ANY(c.rollout_ids)
          UNION SELECT x->>'audio_sha256' FROM jsonb_array_elements(COALESCE(c.reason->'planted', '[]')) x)) AS durations
FROM tasks t
JOIN comparisons c ON c.id = t.comparison_id
JOIN campaigns k ON k.id = t.campaign_id
JOIN prompts p ON p.id = c.prompt_id
LEFT JOIN personas pe ON pe.id = p.persona_id
WHERE t.id = :t AND t.leased_by = :r AND t.lease_token = :token
""")


LOCK_FOR_SUBMIT_SQL = text("""
SELECT t.status, t.leased_by, t.lease_token, t.lease_expires_at, t.presentation, t.campaign_id, t.comparison_id,
       COALESCE(t.lease_expires_at < now(), false) AS lease_lapsed,
       c.rollout_ids, c.is_gold, c.gold_answer, k.protocol, k.dimensions,
       jsonb_array_length(COALESCE(c.reason->'planted', '[]')) AS n_planted,
       p.id AS prior_id, p.rater_id AS prior_rater, p.late AS prior_late, p.gold_correct AS prior_gold,
       m.id AS mine_id, m.late AS mine_late, m.gold_correct AS mine_gold
FROM tasks t
JOIN comparisons c ON c.id = t.comparison_id
JOIN campaigns k ON k.id = t.campaign_id
LEFT JOIN judgments p ON p.submission_id = :sub
LEFT JOIN judgments m ON m.task_id = t.id AND m.rater_id = :r
WHERE t.id = :t
FOR UPDATE OF t
""")
# The judgment, the slot's completion and the audit row in one statement (one round trip).
SUBMIT_SQL = text("""
WITH j AS (
  INSERT INTO judgments (task_id, campaign_id, comparison_id, rater_id, submission_id, protocol, preference, choice,
                         ratings, rationale, listen_ms, events, presentation, is_gold, gold_correct, late)
  VALUES (:t, :c, :cmp, :r, :sub, :protocol, :pref, :choice, CAST(:ratings AS jsonb), :rationale,
          CAST(:listen AS jsonb), CAST(:events AS jsonb), CAST(:presentation AS jsonb), :is_gold, :gold, :late)
  RETURNING id
), t AS (
  UPDATE tasks SET status = 'done', completed_at = now(), lease_expires_at = NULL WHERE id = :t RETURNING id
), a AS (
  INSERT INTO audit_log (actor_id, action, entity, entity_id, details)
  SELECT :r, 'judgments.submit', 'judgment', j.id::text, CAST(:audit AS jsonb) FROM j
)
SELECT id FROM j
""")


class TaskService(Service):
    @action("tasks.rate")
    def claim(self, campaign_id: int, *, want: int = PREFETCH) -> list[Lease]:
        """The rater's current leases in this campaign, topped up to ``want`` (oldest first)."""
        self.ctx.require("tasks.rate")
        rater = self.ctx.principal.user_id
        lease_s = self.ctx.settings.lease_seconds
        claim_sql = CLAIM_SQL_BY_ORDER[self.ctx.settings.serving_order]

        def one(c: Connection) -> list[Lease]:
            return [
                Lease(r[0], r[1], r[2], r[3], r[4], list(r[5]["order"]))
                for r in c.execute(
                    claim_sql, {"c": campaign_id, "r": rater, "token": uuid.uuid4(), "lease_s": lease_s, "want": want}
                )
            ]

        held = self.ctx.statement(one)
        while 0 < len(held) < want:  # each call adds at most one lease; stop when the pool has no more
            more = self.ctx.statement(one)
            if len(more) == len(held):
                break
            held = more
        if not held:
            self._check_open(campaign_id)
        return held

    def _check_open(self, campaign_id: int) -> None:
        row = self.ctx.statement(
            lambda c: c.execute(select(Campaign.name, Campaign.status).where(Campaign.id == campaign_id)).first()
        )
        if row is None:
            raise NotFound(f"campaign {campaign_id} does not exist")
        if row.status != "open":
            raise Conflict(f"campaign {row.name!r} is {row.status}; ask an admin to open it")

    def _held_task(self, s: Session, task_id: int, lease_token: uuid.UUID) -> Task:
        """The task, if the caller still holds its lease; views of an item need a live lease."""
        task = s.get(Task, task_id)
        if task is None or task.leased_by != self.ctx.principal.user_id or task.lease_token != lease_token:
            raise LeaseExpired(LEASE_GONE)
        return task

    @action("tasks.rate")
    def item(self, lease: Lease) -> RaterItem:
        """The blind view of a leased task: labels in presentation order, no model identities."""
        self.ctx.require("tasks.rate")
        row = self.ctx.statement(
            lambda c: c.execute(
                ITEM_SQL, {"t": lease.task_id, "r": self.ctx.principal.user_id, "token": lease.lease_token}
            ).first()
        )
        if row is None:
            raise LeaseExpired(LEASE_GONE)
        rows = {int(k): v for k, v in (row.rollouts or {}).items()}
        durations = row.durations or {}
        planted = planted_of(row.reason)
        n = len(row.rollout_ids)
        # With planted clips, transcripts would give them away (a reference has none, or the
        # same text as every sample): show none, the prompt already holds the text to judge.
        blind_text = bool(planted)
        stimuli = []
        for shown, canon in enumerate(lease.order):
            label = chr(ord("A") + shown)
            if canon >= n:  # role deliberately not carried into the rater's view
                sha = planted[canon - n]["audio_sha256"]
                stimuli.append(Stimulus(label, sha, "", durations.get(sha)))
                continue
            r = rows[row.rollout_ids[canon]]
            stimuli.append(Stimulus(label, r["sha"], "" if blind_text else r["text"], durations.get(r["sha"])))
        ref_sha = next((p["audio_sha256"] for p in planted if p.get("role") == "hidden_reference"), None)
        reference = Stimulus("reference", ref_sha, "", durations.get(ref_sha)) if ref_sha else None
        card = None
        if row.card is not None:
            card = {k: row.card.get(k) for k in ("display_name", "description", "style") if row.card.get(k)}
        return RaterItem(
            row.id,
            row.lease_token,
            row.lease_expires_at,
            row.protocol,
            list(row.dimensions),
            row.instructions,
            card,
            conversation_view(row.messages),
            stimuli,
            reference,
        )

    @action("tasks.rate")
    def timeline(self, item: RaterItem) -> TimelineView:
        """The duplex session of a timeline task (both tracks, the action channel, the clock), with
        no model identity, scenario ground truth or generator metadata; only through a held lease."""
        self.ctx.require("tasks.rate")

        def read(s: Session) -> TimelineView:
            task = self._held_task(s, item.task_id, item.lease_token)
            comp = s.get_one(Comparison, task.comparison_id)
            raw = s.scalar(select(Rollout.timeline).where(Rollout.id == comp.rollout_ids[0]))
            return timeline_view(parse_timeline(raw, f"the session of task {item.task_id}"))

        return self.ctx.tx(read)

    @action("tasks.rate")
    def timeline_audio(self, view: TimelineView, track: str) -> bytes:
        """WAV bytes of one track (``user``, ``assistant``) or of both as ``stereo`` (user left)."""
        self.ctx.require("tasks.rate")
        if track == STEREO:
            return render_stereo(view, self.ctx.blobs.get_bytes)
        if track not in TRACKS:
            raise NotFound(f"track {track!r} does not exist; use {', '.join(TRACKS)} or {STEREO}")
        sha = view.track(track).audio_sha256
        if not sha:
            raise NotFound(f"the {track} track of this session has no audio")
        return self.ctx.blobs.get_bytes(sha)

    @action("tasks.rate")
    def audio(self, item: RaterItem, label: str) -> bytes:
        """Audio bytes of a stimulus the rater may hear (only through a lease they hold)."""
        self.ctx.require("tasks.rate")
        allowed = {st.label: st.audio_sha256 for st in item.stimuli}
        allowed.update({f"prompt{i}": t.get("audio_sha256") for i, t in enumerate(item.conversation)})
        if item.reference is not None:
            allowed["reference"] = item.reference.audio_sha256
        sha = allowed.get(label)
        if not sha:
            raise NotFound(f"no audio for {label!r} in this item")
        return self.ctx.blobs.get_bytes(sha)

    @action("tasks.rate")
    def heartbeat(self, task_id: int, lease_token: uuid.UUID) -> datetime:
        """Extend a lease the rater still holds (also one that lapsed but nobody else took). The new
        expiry is the database's clock plus the lease, as for claims (never this machine's clock)."""
        self.ctx.require("tasks.rate")
        lease = timedelta(seconds=self.ctx.settings.lease_seconds)

        def work(c: Connection) -> datetime:
            new_expiry = c.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.leased_by == self.ctx.principal.user_id,
                    Task.lease_token == lease_token,
                    Task.status == "leased",
                )
                .values(lease_expires_at=func.now() + lease)
                .returning(Task.lease_expires_at)
            ).scalar()
            if new_expiry is None:
                raise LeaseExpired(
                    "this item's lease was taken by another rater after it expired; "
                    "load the next item (your work on it was not saved)"
                )
            return new_expiry

        return self.ctx.statement(work)

    @action("tasks.rate")
    def release(self, task_id: int, lease_token: uuid.UUID) -> None:
        """The rater skips the item: it goes straight back to the pool."""
        self.ctx.require("tasks.rate")
        self.ctx.statement(
            lambda c: c.execute(
                update(Task)
                .where(
                    Task.id == task_id,
                    Task.leased_by == self.ctx.principal.user_id,
                    Task.lease_token == lease_token,
                    Task.status == "leased",
                )
                .values(status="open", leased_by=None, lease_token=None, lease_expires_at=None)
            )
        )

    @action("tasks.rate")
    def submit(
        self, task_id: int, lease_token: uuid.UUID, submission_id: uuid.UUID, answer: JudgmentSubmit | dict[str, Any]
    ) -> SubmitResult:
        self.ctx.require("tasks.rate")
        rater = self.ctx.principal.user_id
        try:
            sub = answer if isinstance(answer, JudgmentSubmit) else JudgmentSubmit.model_validate(answer)
        except ValidationError as exc:
            err = exc.errors()[0]
            raise InvalidInput(f"{'.'.join(map(str, err['loc'])) or 'answer'}: {err['msg']}") from None

        def work(s: Connection) -> SubmitResult:
            # One round trip: lock the slot and read everything the checks need, including any
            # judgment already stored under this submission id or by this rater for this slot.
            row = s.execute(LOCK_FOR_SUBMIT_SQL, {"t": task_id, "sub": submission_id, "r": rater}).first()
            if row is None:
                raise NotFound(f"task {task_id} does not exist")
            if row.prior_id is not None:
                if row.prior_rater != rater:
                    raise Conflict("submission id belongs to another rater; reload the page")
                return SubmitResult(row.prior_id, True, row.prior_late, row.prior_gold)
            if row.status == "done":
                if row.mine_id is not None:  # resubmitted with a fresh id after a lost response
                    return SubmitResult(row.mine_id, True, row.mine_late, row.mine_gold)
                raise LeaseExpired(
                    "this item was completed by another rater after your lease expired; "
                    "your answer was not stored, load the next item"
                )
            if row.leased_by != rater or row.lease_token != lease_token:
                raise LeaseExpired(
                    "your lease on this item expired and another rater took it; your answer "
                    "was not stored, load the next item"
                )
            late = bool(row.lease_lapsed)  # judged by the database's clock, as claims are
            protocol = Protocol(row.protocol)
            n_stimuli = len(row.rollout_ids) + row.n_planted
            order = list((row.presentation or {}).get("order", range(n_stimuli)))
            try:
                validate_for_protocol(sub, protocol, n_stimuli, list(row.dimensions))
            except ValueError as exc:
                raise InvalidInput(str(exc)) from None
            if sub.events:
                # An event time must fall inside the session it marks (the schema only bounds it
                # by the longest clip), checked here so a stale or hand-made request stores nothing.
                raw = s.scalar(select(Rollout.timeline).where(Rollout.id == row.rollout_ids[0]))
                if protocol != Protocol.timeline or not raw:
                    raise InvalidInput(
                        "events with onset times belong to timeline tasks; this task is "
                        f"{protocol.value}: send no events"
                    )
                check_event_onsets(sub.events, parse_timeline(raw, f"task {task_id}").duration_s)
            canon = canonical(sub, protocol, order)
            gold = gold_correct(canon, row.gold_answer)
            try:
                jid = s.execute(
                    SUBMIT_SQL,
                    {
                        "t": task_id,
                        "c": row.campaign_id,
                        "cmp": row.comparison_id,
                        "r": rater,
                        "sub": submission_id,
                        "protocol": protocol.value,
                        "pref": canon.get("preference"),
                        "choice": canon.get("choice"),
                        "ratings": json.dumps({**sub.ratings, **canon.get("scores", {})}),
                        "rationale": sub.rationale,
                        "listen": json.dumps(sub.listen_ms),
                        "events": json.dumps([e.model_dump() for e in sub.events]),
                        "presentation": json.dumps(row.presentation),
                        "is_gold": row.is_gold,
                        "gold": gold,
                        "late": late,
                        "audit": json.dumps({"task_id": task_id, "late": late, "playback_rate": sub.playback_rate}),
                    },
                ).scalar_one()
            except IntegrityError:
                raise Conflict("you already judged this item; load the next one") from None
            return SubmitResult(jid, False, late, gold)

        return self.ctx.connection_tx(work)

    @action("tasks.rate")
    def judged_count(self, campaign_id: int) -> int:
        return int(
            self.ctx.tx(
                lambda s: s.scalar(
                    select(func.count())
                    .select_from(Judgment)
                    .where(Judgment.campaign_id == campaign_id, Judgment.rater_id == self.ctx.principal.user_id)
                )
            )
            or 0
        )


def conversation_view(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        if m.get("role") == "system":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "text": content, "audio_sha256": None})
            continue
        text = content_text(content)
        sha = next((p.get("audio_sha256") for p in content or [] if p.get("type") == "audio"), None)
        out.append({"role": m["role"], "text": text.strip(), "audio_sha256": sha})
    return out


def outstanding(s: Session, campaign_id: int) -> int:
    """Tasks not yet done (open, leased or lapsed)."""
    return int(s.scalar(select(func.count()).where(Task.campaign_id == campaign_id, Task.status != "done")) or 0)
