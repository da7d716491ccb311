"""Reviewer and admin reads: disputed items, judgments side by side, adjudicated labels, exports.

Reviewers see which rater said what (they judge the raters too) but, like raters, never which
policy, version or score produced a clip: the views here carry no rollout or policy fields, so
no page can leak them by accident. Exports (admin/engineer) do carry rollout ids for lineage.
Everything is in canonical order: A is the comparison's first rollout, whatever a rater was shown.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark.domain.annotation import PAIRWISE_CHOICES, RATING_DIMENSIONS, planted_of
from earmark.domain.limits import Limits
from earmark.errors import InvalidInput, NotFound
from earmark.security import action
from earmark.services.annotation_timeline import (
    STEREO,
    TRACKS,
    TimelineView,
    parse_timeline,
    render_stereo,
    timeline_view,
)
from earmark.services.context import Service
from earmark.services.tasks import conversation_view
from earmark.store.models import Adjudication, Blob, Campaign, Comparison, Judgment, Persona, Prompt, Rollout, User

EXPORT_FORMATS = ("csv", "jsonl")
BREAK_S = 30 * 60  # a gap longer than this between two judgments is a break, not work time
EVENT_MATCH_S = 1.0  # two raters' timeline marks of one kind this close in time name the same event
PLANTED_LABELS = {"hidden_reference": "hidden ref", "anchor_low": "low anchor"}  # reviewers may know


@dataclass(frozen=True)
class AdjudicationInfo:
    comparison_id: int
    reviewer: str
    choice: str
    preference: float | None
    note: str
    created_at: datetime


@dataclass(frozen=True)
class DisputedItem:
    comparison_id: int
    campaign_id: int
    protocol: str
    judgments: int
    choice_disagreement: float  # 1 - share of the most common choice
    split: bool  # some raters chose A and others B
    rating_spread: float  # largest std of a 1-5 score on this item (MUSHRA scaled to 1-5)
    summary: str
    adjudication: AdjudicationInfo | None


@dataclass(frozen=True)
class ReviewStimulus:
    label: str  # canonical: A = rollout_ids[0]
    audio_sha256: str | None
    transcript: str
    duration_s: float | None


@dataclass(frozen=True)
class ReviewJudgment:
    id: int
    rater_id: int
    rater: str
    cleared: bool
    choice: str | None
    preference: float | None
    ratings: dict[str, Any]
    rationale: str
    listen_ms: dict[str, Any]
    shown_order: list[str]  # canonical labels in the order this rater saw them
    late: bool
    gold_correct: bool | None
    created_at: datetime
    events: tuple[dict[str, Any], ...] = ()  # timeline marks {"kind", "onset_s", "note"}, by onset


@dataclass(frozen=True)
class ReviewItem:
    comparison_id: int
    campaign_id: int
    protocol: str
    is_gold: bool
    gold_answer: dict[str, Any] | None
    persona: dict[str, Any] | None
    conversation: list[dict[str, Any]]
    stimuli: list[ReviewStimulus]
    judgments: list[ReviewJudgment]
    adjudication: AdjudicationInfo | None


@dataclass(frozen=True)
class RaterThroughput:
    rater: str
    judgments: int
    first_at: datetime
    last_at: datetime
    per_hour: float | None  # judgments per hour of work time (breaks excluded)
    median_s: float | None  # median seconds between consecutive judgments


def disagreement(judgments: list[tuple[str | None, dict[str, Any]]]) -> tuple[float, bool, float, str]:
    """(choice disagreement, A/B split, rating spread, summary) of one item's (choice, ratings) list."""
    choices = Counter(c for c, _ in judgments if c is not None)
    n = sum(choices.values())
    choice_dis = 1 - max(choices.values()) / n if n else 0.0
    split = choices.get("A", 0) > 0 and choices.get("B", 0) > 0
    spreads: dict[str, float] = {}
    scales = {d: 1.0 for d in RATING_DIMENSIONS} | {"mos": 1.0, "mushra": 20.0}  # MUSHRA 0-100 -> 0-5
    for key, scale in scales.items():
        per_clip: dict[int, list[float]] = defaultdict(list)
        for _, ratings in judgments:
            v = ratings.get(key)
            for i, x in enumerate(v if isinstance(v, list) else [v] if v is not None else []):
                per_clip[i].append(float(x) / scale)
        for i, xs in per_clip.items():
            if len(xs) >= 2:
                name = key if len(per_clip) == 1 else f"{key}[{chr(65 + i)}]"
                spreads[name] = statistics.pstdev(xs)
    spread = max(spreads.values(), default=0.0)
    parts = [" · ".join(f"{c} {k}" for c, k in choices.most_common())] if choices else []
    parts += [f"{d} sd {s:.1f}" for d, s in sorted(spreads.items(), key=lambda t: -t[1])[:2] if s > 0]
    return round(choice_dis, 4), split, round(spread, 4), "; ".join(parts)


def event_disagreement(marks: list[list[dict[str, Any]]]) -> float:
    """Mean over rater pairs of 1 - (matched marks x 2 / all marks): marks match when they have the
    same kind and lie within ``EVENT_MATCH_S`` (each mark matched at most once, closest first).
    0 when every rater marked the same events (or none), 1 when no mark is shared."""

    def disagree(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
        if not a and not b:
            return 0.0
        pairs = sorted(
            (abs(x["onset_s"] - y["onset_s"]), i, j)
            for i, x in enumerate(a)
            for j, y in enumerate(b)
            if x["kind"] == y["kind"] and abs(x["onset_s"] - y["onset_s"]) <= EVENT_MATCH_S
        )
        used_a, used_b = set(), set()
        for _d, i, j in pairs:
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
        return 1 - 2 * len(used_a) / (len(a) + len(b))

    pairs = [(a, b) for i, a in enumerate(marks) for b in marks[i + 1 :]]
    return sum(disagree(a, b) for a, b in pairs) / len(pairs) if pairs else 0.0


def _label(canon: int, n_rollouts: int, planted: list[dict[str, Any]]) -> str:
    """Canonical label of a stimulus: A, B, ... for rollouts, the role for a planted clip."""
    if canon < n_rollouts:
        return chr(65 + canon)
    return PLANTED_LABELS.get(str(planted[canon - n_rollouts].get("role")), "planted")


def _adjudication_info(row: Any) -> AdjudicationInfo:
    return AdjudicationInfo(row.comparison_id, row.reviewer, row.choice, row.preference, row.note, row.created_at)


ADJ_QUERY = select(
    Adjudication.comparison_id,
    User.username.label("reviewer"),
    Adjudication.choice,
    Adjudication.preference,
    Adjudication.note,
    Adjudication.created_at,
).join(User, User.id == Adjudication.reviewer_id)


class ReviewService(Service):
    @action("judgments.review")
    def disputed(
        self,
        campaign_id: int,
        *,
        min_disagreement: float = 0.3,
        rating_std: float = 1.0,
        min_judgments: int = 2,
        limit: int = 200,
    ) -> list[DisputedItem]:
        """Items whose raters split between A and B, whose choices disagree at least
        ``min_disagreement``, or whose 1-5 scores spread at least ``rating_std``; most disputed first."""
        self.ctx.require("judgments.review")

        def read(s: Session) -> tuple[list[Any], dict[int, AdjudicationInfo], str]:
            protocol = s.scalar(select(Campaign.protocol).where(Campaign.id == campaign_id))
            if protocol is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            rows = s.execute(
                select(Judgment.comparison_id, Judgment.choice, Judgment.ratings, Judgment.events).where(
                    Judgment.campaign_id == campaign_id
                )
            ).all()
            adj = {
                r.comparison_id: _adjudication_info(r)
                for r in s.execute(
                    ADJ_QUERY.join(Comparison, Comparison.id == Adjudication.comparison_id).where(
                        Comparison.campaign_id == campaign_id
                    )
                )
            }
            return list(rows), adj, protocol

        rows, adj, protocol = self.ctx.tx(read)
        by_item: dict[int, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
        marks: dict[int, list[list[dict[str, Any]]]] = defaultdict(list)
        for r in rows:
            by_item[r.comparison_id].append((r.choice, r.ratings or {}))
            marks[r.comparison_id].append(list(r.events or []))
        out = []
        for cid, js in by_item.items():
            if len(js) < min_judgments:
                continue
            dis, split, spread, summary = disagreement(js)
            if protocol == "timeline":  # no choice to split on: disagreement is about the marked events
                dis = round(event_disagreement(marks[cid]), 4)
                kinds = Counter(e["kind"] for m in marks[cid] for e in m)
                summary = "; ".join(
                    filter(
                        None, [" · ".join(f"{k} {n}" for k, n in kinds.most_common()) or "no events marked", summary]
                    )
                )
            if split or dis >= min_disagreement or spread >= rating_std:
                out.append(DisputedItem(cid, campaign_id, protocol, len(js), dis, split, spread, summary, adj.get(cid)))
        out.sort(key=lambda d: (-int(d.split), -d.choice_disagreement, -d.rating_spread, d.comparison_id))
        return out[:limit]

    @action("judgments.review")
    def item(self, comparison_id: int) -> ReviewItem:
        """One item with its clips (canonical order) and every judgment, rater named."""
        self.ctx.require("judgments.review")

        def read(s: Session) -> ReviewItem:
            comp = s.get(Comparison, comparison_id)
            if comp is None:
                raise NotFound(f"comparison {comparison_id} does not exist")
            camp = s.get_one(Campaign, comp.campaign_id)
            prompt = s.get_one(Prompt, comp.prompt_id)
            persona = s.get(Persona, prompt.persona_id) if prompt.persona_id else None
            rollouts = {r.id: r for r in s.scalars(select(Rollout).where(Rollout.id.in_(list(comp.rollout_ids))))}
            shas = [r.audio_sha256 for r in rollouts.values() if r.audio_sha256]
            durations: dict[str | None, float | None] = dict(
                s.execute(select(Blob.sha256, Blob.duration_s).where(Blob.sha256.in_(shas))).all()
            )
            planted = planted_of(comp.reason)
            n = len(comp.rollout_ids)
            durations |= dict(
                s.execute(
                    select(Blob.sha256, Blob.duration_s).where(Blob.sha256.in_([p["audio_sha256"] for p in planted]))
                ).all()
            )
            stimuli = [
                ReviewStimulus(
                    chr(65 + i),
                    rollouts[rid].audio_sha256,
                    rollouts[rid].text,
                    durations.get(rollouts[rid].audio_sha256),
                )
                for i, rid in enumerate(comp.rollout_ids)
            ]
            stimuli += [
                ReviewStimulus(_label(n + j, n, planted), p["audio_sha256"], "", durations.get(p["audio_sha256"]))
                for j, p in enumerate(planted)
            ]
            judgments = []
            for j, name, cleared in s.execute(
                select(Judgment, User.username, User.cleared_for_aggregation)
                .join(User, User.id == Judgment.rater_id)
                .where(Judgment.comparison_id == comparison_id)
                .order_by(Judgment.id)
            ):
                order = (j.presentation or {}).get("order") or list(range(n + len(planted)))
                judgments.append(
                    ReviewJudgment(
                        j.id,
                        j.rater_id,
                        name,
                        cleared,
                        j.choice,
                        j.preference,
                        j.ratings,
                        j.rationale,
                        j.listen_ms,
                        [_label(i, n, planted) for i in order],
                        j.late,
                        j.gold_correct,
                        j.created_at,
                        tuple(sorted(j.events or [], key=lambda e: e.get("onset_s", 0.0))),
                    )
                )
            adj = s.execute(ADJ_QUERY.where(Adjudication.comparison_id == comparison_id)).first()
            card = None
            if persona is not None:
                card = {k: persona.card.get(k) for k in ("display_name", "description", "style") if persona.card.get(k)}
            return ReviewItem(
                comp.id,
                comp.campaign_id,
                camp.protocol,
                comp.is_gold,
                comp.gold_answer,
                card,
                conversation_view(prompt.messages),
                stimuli,
                judgments,
                _adjudication_info(adj) if adj else None,
            )

        return self.ctx.tx(read)

    @action("judgments.review")
    def audio(self, item: ReviewItem, label: str) -> bytes:
        """Audio of a clip (A, B, ...) or prompt turn (prompt0, ...) of an item under review."""
        self.ctx.require("judgments.review")
        allowed = {st.label: st.audio_sha256 for st in item.stimuli}
        allowed.update({f"prompt{i}": t.get("audio_sha256") for i, t in enumerate(item.conversation)})
        if not allowed.get(label):
            raise NotFound(f"no audio for {label!r} in comparison {item.comparison_id}")
        return self.ctx.blobs.get_bytes(str(allowed[label]))

    @action("judgments.review")
    def timeline(self, comparison_id: int) -> TimelineView:
        """The duplex session a timeline item rates (same view raters get: no model identity)."""
        self.ctx.require("judgments.review")

        def read(s: Session) -> TimelineView:
            comp = s.get(Comparison, comparison_id)
            if comp is None:
                raise NotFound(f"comparison {comparison_id} does not exist")
            raw = s.scalar(select(Rollout.timeline).where(Rollout.id == comp.rollout_ids[0]))
            return timeline_view(parse_timeline(raw, f"comparison {comparison_id}"))

        return self.ctx.tx(read)

    @action("judgments.review")
    def timeline_audio(self, view: TimelineView, track: str) -> bytes:
        """One track (``user``, ``assistant``) or ``stereo`` (user left, assistant right)."""
        self.ctx.require("judgments.review")
        if track == STEREO:
            return render_stereo(view, self.ctx.blobs.get_bytes)
        sha = view.track(track).audio_sha256 if track in TRACKS else None
        if not sha:
            raise NotFound(f"no audio for track {track!r}; use {', '.join(TRACKS)} or {STEREO}")
        return self.ctx.blobs.get_bytes(sha)

    @action("judgments.review")
    def adjudicate(
        self, comparison_id: int, choice: str, preference: float | None = None, note: str = ""
    ) -> AdjudicationInfo:
        """Record the reviewer's label (canonical A/B/tie/both_bad); a later decision replaces it."""
        self.ctx.require("judgments.review")
        reviewer = self.ctx.principal.user_id
        if reviewer is None:
            raise InvalidInput("adjudications record who decided: log in with a named reviewer account")
        if choice not in PAIRWISE_CHOICES:
            raise InvalidInput(f"choice {choice!r} is unknown; use one of {', '.join(PAIRWISE_CHOICES)}")
        if preference is not None:
            if not -1 <= preference <= 1:
                raise InvalidInput(f"preference {preference} is out of range; use -1 (B much better) to +1 (A)")
            if (
                (choice == "A" and preference <= 0)
                or (choice == "B" and preference >= 0)
                or (choice in ("tie", "both_bad") and preference != 0)
            ):
                raise InvalidInput(f"preference {preference} contradicts choice {choice}; positive means A is better")
        note = (note or "").strip()
        if len(note) > Limits.MAX_RATIONALE_CHARS or "\x00" in note:
            raise InvalidInput(f"note must be at most {Limits.MAX_RATIONALE_CHARS} characters without NUL bytes")

        def write(s: Session) -> AdjudicationInfo:
            if s.get(Comparison, comparison_id) is None:
                raise NotFound(f"comparison {comparison_id} does not exist")
            values = {
                "comparison_id": comparison_id,
                "reviewer_id": reviewer,
                "choice": choice,
                "preference": preference,
                "note": note,
            }
            stmt = insert(Adjudication).values(**values)
            stmt = stmt.on_conflict_do_update(
                index_elements=[Adjudication.comparison_id], set_={**values, "created_at": func.now()}
            )
            s.execute(stmt)
            self.ctx.audit(
                s,
                "judgments.adjudicate",
                "comparison",
                comparison_id,
                choice=choice,
                preference=preference,
                note=note[:500],
            )
            return _adjudication_info(s.execute(ADJ_QUERY.where(Adjudication.comparison_id == comparison_id)).one())

        return self.ctx.tx(write)

    @action("judgments.review")
    def adjudications(self, campaign_id: int) -> list[AdjudicationInfo]:
        self.ctx.require("judgments.review")
        q = (
            ADJ_QUERY.join(Comparison, Comparison.id == Adjudication.comparison_id)
            .where(Comparison.campaign_id == campaign_id)
            .order_by(Adjudication.comparison_id)
        )
        return [_adjudication_info(r) for r in self.ctx.tx(lambda s: s.execute(q).all())]

    @action("judgments.review")
    def throughput(self, campaign_id: int) -> list[RaterThroughput]:
        """Per rater: judgments, active span, judgments per work hour, median seconds per item."""
        self.ctx.require("judgments.review")
        q = (
            select(User.username, Judgment.created_at)
            .join(User, User.id == Judgment.rater_id)
            .where(Judgment.campaign_id == campaign_id)
            .order_by(User.username, Judgment.created_at)
        )
        times: dict[str, list[datetime]] = defaultdict(list)
        for name, at in self.ctx.tx(lambda s: s.execute(q).all()):
            times[name].append(at)
        out = []
        for name, ts in times.items():
            gaps = [(b - a).total_seconds() for a, b in pairwise(ts)]
            work = [g for g in gaps if g <= BREAK_S]
            per_hour = len(work) / (sum(work) / 3600) if work and sum(work) > 0 else None
            out.append(
                RaterThroughput(
                    name,
                    len(ts),
                    ts[0],
                    ts[-1],
                    None if per_hour is None else round(per_hour, 1),
                    round(statistics.median(work), 1) if work else None,
                )
            )
        return sorted(out, key=lambda t: -t.judgments)

    @action("data.read")
    def export(self, campaign_id: int, fmt: str = "jsonl") -> bytes:
        """All judgments of a campaign with rater, gold and adjudication columns, as CSV or JSONL."""
        self.ctx.require("data.read")
        if fmt not in EXPORT_FORMATS:
            raise InvalidInput(f"export format {fmt!r} is unknown; use one of {', '.join(EXPORT_FORMATS)}")
        q = (
            select(
                Judgment,
                User.username,
                User.cleared_for_aggregation,
                Comparison.rollout_ids,
                Adjudication.choice.label("adjudicated_choice"),
            )
            .join(User, User.id == Judgment.rater_id)
            .join(Comparison, Comparison.id == Judgment.comparison_id)
            .outerjoin(Adjudication, Adjudication.comparison_id == Judgment.comparison_id)
            .where(Judgment.campaign_id == campaign_id)
            .order_by(Judgment.id)
        )
        records = []
        for j, name, cleared, rollout_ids, adj in self.ctx.tx(lambda s: s.execute(q).all()):
            records.append(
                {
                    "judgment_id": j.id,
                    "campaign_id": j.campaign_id,
                    "comparison_id": j.comparison_id,
                    "rollout_ids": list(rollout_ids),
                    "rater": name,
                    "rater_id": j.rater_id,
                    "rater_cleared": cleared,
                    "protocol": j.protocol,
                    "choice": j.choice,
                    "preference": j.preference,
                    "ratings": j.ratings,
                    "rationale": j.rationale,
                    "listen_ms": j.listen_ms,
                    "events": j.events,
                    "presentation": j.presentation,
                    "is_gold": j.is_gold,
                    "gold_correct": j.gold_correct,
                    "late": j.late,
                    "adjudicated_choice": adj,
                    "created_at": j.created_at.isoformat(),
                }
            )
        if fmt == "jsonl":
            return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
        buf = io.StringIO()
        cols = list(records[0]) if records else ["judgment_id"]
        w = csv.DictWriter(buf, fieldnames=cols)
        w.writeheader()
        for r in records:
            w.writerow({k: _csv_cell(v) for k, v in r.items()})
        return buf.getvalue().encode()


def _csv_cell(v: Any) -> Any:
    """Nested values as JSON; text that a spreadsheet would run as a formula is quoted with '."""
    if isinstance(v, dict | list):
        v = json.dumps(v, ensure_ascii=False)
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + v
    return v
