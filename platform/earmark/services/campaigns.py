"""Annotation campaigns: which rollouts, which protocol, overlap k, gold items, progress.

Comparisons are chosen where they teach the most: for pairwise protocols, pairs of samples of the
same prompt whose reward-model scores are closest (the models are least sure), falling back to
seeded random pairs when nothing is scored. Gold items are planted mismatches (a response to a
different prompt against a real one: the real one must win), mixed in at the campaign's ratio.

MUSHRA (ITU-R BS.1534-3) where a prompt's reference has audio (TTS): each comparison also gets
the hidden reference (the reference clip itself) and a low anchor (the reference low-pass
filtered at 3.5 kHz), recorded in ``reason["planted"]`` and shuffled among the rollouts by the
task's presentation order, so raters cannot tell them apart; quality screening reads
``reason["hidden_reference"]`` (the planted position) to screen assessors. Timeline campaigns take
only rollouts that carry a duplex timeline.
"""

from __future__ import annotations

import builtins
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from earmark.domain.annotation import MUSHRA_ANCHOR_LOWPASS_HZ, RATING_DIMENSIONS
from earmark.domain.enums import CampaignStatus, Protocol, Regime
from earmark.errors import Conflict, InvalidInput, NotFound
from earmark.security import action, allowed_roles
from earmark.services.context import Service
from earmark.store.models import Blob, Campaign, Comparison, Judgment, Policy, Prompt, RewardScore, Rollout, Task

ANCHOR_FILTER_ORDER = 8  # Butterworth order of the low anchor's low-pass (steep, applied forward and back)


class CampaignCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.\-]*$")
    protocol: Protocol = Protocol.pairwise
    dimensions: list[str] = Field(default_factory=lambda: list(RATING_DIMENSIONS))
    overlap: int = Field(default=3, ge=1, le=50, description="raters per item (k)")
    gold_ratio: float = Field(default=0.1, ge=0, le=0.5)
    instructions: str = Field(default="", max_length=4000)
    policy_ids: list[int] | None = Field(default=None, description="rollouts of these policy versions")
    rounds: list[int] | None = None
    regime: Regime | None = None
    prompt_ids: list[int] | None = None
    max_items: int = Field(default=200, ge=1, le=100_000)
    reward_model_id: int | None = Field(default=None, description="pick pairs where this model is least sure")
    seed: int = Field(default=0, description="seed of the item choice, gold items and presentation orders")
    preset: str | None = Field(
        default=None,
        description="regime preset (earmark.regimes) that fills protocol, "
        "dimensions, overlap, gold ratio, instructions and regime "
        "where they are not given",
    )

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        # Values the caller gives win; without a preset nothing changes.
        if not isinstance(data, dict) or not data.get("preset"):
            return data
        from earmark.regimes import get_preset

        preset = get_preset(str(data["preset"]))  # ValueError names the known presets
        return {**preset.campaign_fields(), **{k: v for k, v in data.items() if v is not None}}


@dataclass(frozen=True)
class CampaignProgress:
    campaign_id: int
    items: int
    tasks: int
    done: int
    leased: int
    open: int
    per_rater: dict[str, int]

    @property
    def complete(self) -> bool:
        return self.tasks > 0 and self.done == self.tasks


def _stimuli_for(protocol: Protocol) -> int:
    return {Protocol.pairwise: 2, Protocol.cmos: 2, Protocol.mos: 1, Protocol.timeline: 1, Protocol.mushra: 4}[protocol]


class CampaignService(Service):
    @action("campaigns.manage")
    def create(self, spec: CampaignCreate) -> Campaign:
        self.ctx.require("campaigns.manage")
        unknown = [d for d in spec.dimensions if d not in RATING_DIMENSIONS]
        if unknown:
            raise InvalidInput(f"unknown rating dimension(s) {unknown}; use {list(RATING_DIMENSIONS)}")

        # Anchors are rendered and stored (blob bytes and row) before the campaign's transaction:
        # a failed create leaves at most a recorded, content-addressed clip that the next one reuses.
        planted = self._mushra_planted(spec) if spec.protocol == Protocol.mushra else {}

        def write(s: Session) -> Campaign:
            if s.scalar(select(Campaign.id).where(Campaign.name == spec.name)):
                raise Conflict(f"campaign {spec.name!r} exists; choose another name")
            rollouts = self._select_rollouts(s, spec)
            if not rollouts:
                if spec.protocol == Protocol.timeline:
                    raise InvalidInput(
                        "no rollout in the selection carries a duplex timeline; the timeline "
                        "protocol rates duplex sessions: select regime duplex (and run duplex "
                        "rollouts first) or pick another protocol"
                    )
                raise InvalidInput(
                    "no rollouts match the selection (policy versions, rounds, regime, prompts); "
                    "run `earmark rollout` first or widen the selection"
                )
            items = self._plan_items(s, spec, rollouts, planted)
            if not items:
                need = (
                    "3 rollouts (2 when the prompt's reference has audio)"
                    if spec.protocol == Protocol.mushra
                    else _stimuli_for(spec.protocol)
                )
                raise InvalidInput(
                    f"the selection has no prompt with enough rollouts for {spec.protocol.value} "
                    f"(needs {need} per prompt)"
                )
            camp = Campaign(
                name=spec.name,
                protocol=spec.protocol.value,
                dimensions=spec.dimensions,
                overlap=spec.overlap,
                gold_ratio=spec.gold_ratio,
                instructions=spec.instructions,
                status=CampaignStatus.open.value,
                created_by=self.ctx.principal.user_id,
                selection=spec.model_dump(mode="json", exclude={"name", "instructions"}),
            )
            s.add(camp)
            s.flush()
            self._add_items(s, camp, items, spec.overlap, spec.seed)
            self.ctx.audit(
                s,
                "campaigns.create",
                "campaign",
                camp.id,
                protocol=spec.protocol.value,
                items=len(items),
                overlap=spec.overlap,
            )
            return camp

        return self.ctx.tx(write)

    # -- selection -------------------------------------------------------------------------------
    def _select_rollouts(self, s: Session, spec: CampaignCreate) -> list[tuple[int, int, int]]:
        # Identical = same words AND same audio: TTS A/B compares renderings of one text (same
        # words, different audio), which must stay pairable.
        digest = func.md5(Rollout.text + "|" + func.coalesce(Rollout.audio_sha256, ""))
        q = select(Rollout.id, Rollout.prompt_id, Rollout.policy_id, digest).join(
            Prompt, Prompt.id == Rollout.prompt_id
        )
        if spec.policy_ids:
            q = q.where(Rollout.policy_id.in_(spec.policy_ids))
        if spec.rounds is not None:
            q = q.where(Rollout.round.in_(spec.rounds))
        if spec.regime:
            q = q.where(Prompt.regime == spec.regime.value)
        if spec.prompt_ids:
            q = q.where(Rollout.prompt_id.in_(spec.prompt_ids))
        if spec.protocol == Protocol.timeline:
            q = q.where(func.jsonb_typeof(Rollout.timeline) == "object")
        return list(s.execute(q.order_by(Rollout.id)).all())

    # -- MUSHRA hidden reference and low anchor -----------------------------------------------------
    def _mushra_planted(self, spec: CampaignCreate) -> dict[int, list[dict[str, Any]]]:
        """prompt id -> stimuli to plant (hidden reference, low anchor) for prompts in the selection
        whose ``reference`` names an audio clip (``reference["audio_sha256"]``)."""

        def read(s: Session) -> list[Any]:
            pids = sorted({r[1] for r in self._select_rollouts(s, spec)})
            rows = s.execute(
                select(Prompt.id, Prompt.external_id, Prompt.reference).where(
                    Prompt.id.in_(pids), Prompt.reference.is_not(None)
                )
            ).all()
            refs = [(pid, ext, (ref or {}).get("audio_sha256")) for pid, ext, ref in rows]
            refs = [r for r in refs if r[2]]
            known = set(s.scalars(select(Blob.sha256).where(Blob.sha256.in_([r[2] for r in refs]))))
            for _pid, ext, sha in refs:
                if sha not in known:
                    raise InvalidInput(
                        f"prompt {ext!r} names reference audio {sha} that is not in the store; "
                        "store the clip first (Earmark.blobs.put_audio) and put the sha256 it "
                        "returns in the prompt's reference"
                    )
            return refs

        out: dict[int, list[dict[str, Any]]] = {}
        anchors: dict[str, str | None] = {}  # one anchor per reference clip, however many prompts share it
        for pid, _ext, ref in self.ctx.tx(read):
            if ref not in anchors:
                anchors[ref] = self.low_anchor(ref)
            out[pid] = [{"role": "hidden_reference", "audio_sha256": ref}]
            if anchors[ref]:
                out[pid].append(
                    {"role": "anchor_low", "audio_sha256": anchors[ref], "lowpass_hz": MUSHRA_ANCHOR_LOWPASS_HZ}
                )
        return out

    @action("campaigns.manage")
    def low_anchor(self, reference_sha256: str) -> str | None:
        """The BS.1534-3 low anchor of a reference clip (low-pass at 3.5 kHz), stored as a blob.

        Zero-phase filtering keeps it sample-aligned with the reference; the result is
        deterministic, so the content-addressed store keeps one copy however often it is made.
        None when the clip has nothing above 3.5 kHz to remove (Nyquist too close)."""
        from scipy.signal import butter, sosfiltfilt

        from earmark import audio
        from earmark.services.blob_service import BlobService

        samples, sr = audio.decode(self.ctx.blobs.get_bytes(reference_sha256))
        if sr / 2 <= MUSHRA_ANCHOR_LOWPASS_HZ * 1.1:
            return None
        sos = butter(ANCHOR_FILTER_ORDER, MUSHRA_ANCHOR_LOWPASS_HZ, btype="low", fs=sr, output="sos")
        padlen = min(len(samples) - 1, 3 * (2 * len(sos) + 1))  # very short clips: filter what is there
        filtered = sosfiltfilt(sos, samples, axis=0, padlen=max(0, padlen))
        return BlobService(self.ctx).put_waveform(filtered.astype("float32"), sr).sha256

    def _plan_items(
        self,
        s: Session,
        spec: CampaignCreate,
        rollouts: list[Any],
        planted: dict[int, list[dict[str, Any]]] | None = None,
    ) -> list[dict[str, Any]]:
        planted = planted or {}
        rng = random.Random(spec.seed)
        by_prompt: dict[int, list[int]] = defaultdict(list)
        digest: dict[int, str] = {}
        for rid, pid, _pol, text_md5 in rollouts:
            by_prompt[pid].append(rid)
            digest[rid] = text_md5
        need = _stimuli_for(spec.protocol)
        score: dict[int, float] = {}
        if spec.reward_model_id is not None:
            score = dict(
                s.execute(
                    select(RewardScore.rollout_id, func.avg(RewardScore.score))
                    .where(
                        RewardScore.reward_model_id == spec.reward_model_id,
                        RewardScore.rollout_id.in_([r[0] for r in rollouts]),
                    )
                    .group_by(RewardScore.rollout_id)
                ).all()
            )
        candidates: list[tuple[float, dict[str, Any]]] = []
        for pid, rids in by_prompt.items():
            if spec.protocol in (Protocol.mos, Protocol.timeline):
                candidates += [
                    (rng.random(), {"prompt_id": pid, "rollout_ids": [r], "reason": {"kind": "single"}}) for r in rids
                ]
            elif spec.protocol in (Protocol.pairwise, Protocol.cmos):
                # Two identical responses teach nothing and waste a rater's time (their scores tie,
                # so "least sure" would otherwise pick them first).
                pairs = [(a, b) for i, a in enumerate(rids) for b in rids[i + 1 :] if digest[a] != digest[b]]
                for a, b in pairs:
                    if score and a in score and b in score:
                        gap = abs(score[a] - score[b])
                        reason = {"kind": "least_sure", "score_gap": round(gap, 4)}
                        key = gap
                    else:
                        reason, key = {"kind": "random"}, 1.0 + rng.random()
                    candidates.append((key, {"prompt_id": pid, "rollout_ids": [a, b], "reason": reason}))
            elif spec.protocol == Protocol.mushra and len(rids) >= (2 if pid in planted else need - 1):
                chosen = rng.sample(rids, min(len(rids), need - 1))
                reason = {"kind": "mushra"}
                if pid in planted:
                    n = len(chosen)
                    reason |= {
                        "planted": planted[pid],
                        "hidden_reference": n,
                        "anchors": [n + j for j, p in enumerate(planted[pid]) if p["role"] != "hidden_reference"],
                    }
                candidates.append((rng.random(), {"prompt_id": pid, "rollout_ids": chosen, "reason": reason}))
        candidates.sort(key=lambda c: c[0])
        # One pair per prompt first (coverage), then the rest by informativeness.
        seen: set[int] = set()
        first = []
        for c in candidates:
            if c[1]["prompt_id"] not in seen:
                seen.add(c[1]["prompt_id"])
                first.append(c)
        rest = [c for c in candidates if c not in first]
        items = [c[1] for c in first + rest][: spec.max_items]
        n_gold = round(len(items) * spec.gold_ratio / max(1e-9, 1 - spec.gold_ratio)) if spec.gold_ratio else 0
        items += self._gold_items(by_prompt, spec.protocol, n_gold, rng)
        rng.shuffle(items)
        return items

    @staticmethod
    def _gold_items(
        by_prompt: dict[int, list[int]], protocol: Protocol, n: int, rng: random.Random
    ) -> list[dict[str, Any]]:
        """Planted mismatches: a response to another prompt is always the worse answer."""
        prompts = list(by_prompt)
        if n == 0 or len(prompts) < 2 or protocol not in (Protocol.pairwise, Protocol.cmos):
            return []
        out = []
        for _ in range(n):
            p, q = rng.sample(prompts, 2)
            good, bad = rng.choice(by_prompt[p]), rng.choice(by_prompt[q])
            out.append(
                {
                    "prompt_id": p,
                    "rollout_ids": [good, bad],
                    "is_gold": True,
                    "gold_answer": {"choice": "A"},
                    "reason": {"kind": "gold_mismatch"},
                }
            )
        return out

    @staticmethod
    def _add_items(s: Session, camp: Campaign, items: list[dict[str, Any]], overlap: int, seed: int) -> None:
        """Comparisons and their k task slots. Each slot's blind presentation order (which clip is
        A, where a planted MUSHRA stimulus lands) is drawn here from the campaign's seed, in a
        stream of its own (the item choice above is the same with or without it), so the same
        seed presents the same campaign the same way."""
        comps = [
            Comparison(
                campaign_id=camp.id,
                prompt_id=it["prompt_id"],
                rollout_ids=it["rollout_ids"],
                is_gold=it.get("is_gold", False),
                gold_answer=it.get("gold_answer"),
                reason=it["reason"],
            )
            for it in items
        ]
        s.add_all(comps)
        s.flush()
        rng = random.Random(f"presentation:{seed}")
        tasks = []
        for c in comps:
            n = len(c.rollout_ids) + len(c.reason.get("planted") or [])
            for k in range(1 if c.is_gold else overlap):
                order = rng.sample(range(n), n)
                tasks.append(Task(campaign_id=camp.id, comparison_id=c.id, slot=k, presentation={"order": order}))
        s.add_all(tasks)

    # -- reading ---------------------------------------------------------------------------------
    @action("campaigns.view")
    def get(self, campaign_id: int) -> Campaign:
        row = self.ctx.tx(lambda s: s.get(Campaign, campaign_id))
        if row is None:
            raise NotFound(f"campaign {campaign_id} does not exist")
        return row

    @action("campaigns.view")
    def list(self, status: str | None = None) -> list[Campaign]:
        q = select(Campaign).order_by(Campaign.id.desc())
        if status:
            q = q.where(Campaign.status == status)
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("campaigns.manage")
    def set_status(self, campaign_id: int, status: CampaignStatus) -> None:
        self.ctx.require("campaigns.manage")

        def write(s: Session) -> None:
            c = s.get(Campaign, campaign_id, with_for_update=True)
            if c is None:
                raise NotFound(f"campaign {campaign_id} does not exist")
            c.status = status.value
            self.ctx.audit(s, "campaigns.status", "campaign", campaign_id, status=status.value)

        self.ctx.tx(write)

    @action("campaigns.view")
    def progress(self, campaign_id: int) -> CampaignProgress:
        from earmark.store.models import User

        def read(s: Session) -> CampaignProgress:
            rows = dict(
                s.execute(
                    select(Task.status, func.count()).where(Task.campaign_id == campaign_id).group_by(Task.status)
                ).all()
            )
            # a lease past its expiry is back in the pool: count it as open
            expired = (
                s.scalar(
                    select(func.count()).where(
                        Task.campaign_id == campaign_id, Task.status == "leased", Task.lease_expires_at < func.now()
                    )
                )
                or 0
            )
            items = s.scalar(select(func.count()).select_from(Comparison).where(Comparison.campaign_id == campaign_id))
            # who judged how much (user names) only for roles that see the dashboard
            per_rater = (
                {}
                if self.ctx.principal.role not in allowed_roles("dashboard.view")
                else dict(
                    s.execute(
                        select(User.username, func.count())
                        .join(Judgment, Judgment.rater_id == User.id)
                        .where(Judgment.campaign_id == campaign_id)
                        .group_by(User.username)
                    ).all()
                )
            )
            total = sum(rows.values())
            return CampaignProgress(
                campaign_id,
                items or 0,
                total,
                rows.get("done", 0),
                rows.get("leased", 0) - expired,
                rows.get("open", 0) + expired,
                per_rater,
            )

        return self.ctx.tx(read)

    @action("dashboard.view")
    def judgment_count(self, campaign_id: int, until: datetime | None = None) -> tuple[datetime, int]:
        """(cut-off, judgments the campaign holds made up to it); the cut-off defaults to the store's
        clock now (the store's, not this machine's: judgments are stamped by the store)."""

        def read(s: Session) -> tuple[datetime, int]:
            cut = until or s.scalar(select(func.clock_timestamp()))
            assert cut is not None  # clock_timestamp() is never NULL
            n = s.scalar(
                select(func.count())
                .select_from(Judgment)
                .where(Judgment.campaign_id == campaign_id, Judgment.created_at <= cut)
            )
            return cut, int(n or 0)

        return self.ctx.tx(read)

    @action("judgments.review")
    def policies_in(self, campaign_id: int) -> builtins.list[int]:
        """Policy ids whose rollouts are in the campaign (for reviewers and dashboards only)."""
        self.ctx.require("judgments.review")
        q = (
            select(Policy.id)
            .join(Rollout, Rollout.policy_id == Policy.id)
            .join(
                Comparison, and_(Comparison.campaign_id == campaign_id, Rollout.id == func.any(Comparison.rollout_ids))
            )
            .distinct()
        )
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))
