"""Dataset snapshots: a frozen, hashed selection of preference pairs with lineage, as Parquet.

The content hash covers the rows only (canonical JSON, sorted), not the Parquet bytes or the build
time, so the same filters on the same data give the same hash on any machine. Building a snapshot
whose hash already exists under that name returns the existing version instead of a duplicate.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from earmark.domain.messages import content_text
from earmark.domain.persona_text import with_persona
from earmark.errors import InvalidInput, NotFound
from earmark.security import action
from earmark.services.context import Service
from earmark.services.labels import LabelConfig, LabelService, PreferenceLabel
from earmark.store.models import Dataset, Persona, Prompt, Rollout

# 2: chat-form columns beside the plain-text ones (prompt_chat with audio parts by sha256 and the
#    persona as the system message, tools, tool calls and duplex timelines of both responses), so
#    exports carry each regime's content from the frozen snapshot alone.
SNAPSHOT_SCHEMA_VERSION = 2
LABEL_SOURCES = ("human", "adjudicated", "ai")


class SnapshotFilters(BaseModel):
    campaign_ids: list[int] = Field(default_factory=list, description="human labels from these campaigns")
    policy_ids: list[int] | None = Field(default=None, description="only pairs of rollouts of these policy versions")
    rounds: list[int] | None = None
    regimes: list[str] | None = None
    splits: list[str] | None = Field(default=None, description="prompt splits (train/heldout/test)")
    label_sources: list[str] = Field(default_factory=lambda: list(LABEL_SOURCES))
    exclude_prompt_ids: list[int] = Field(default_factory=list, description="prompts to leave out")
    exclude_shortcut: bool = Field(default=True, description="leave out prompts the modality-shortcut audit removed")
    labels: LabelConfig = Field(default_factory=LabelConfig)


def _canonical(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r, sort_keys=True, separators=(",", ":")) for r in rows).encode()


def _plain_messages(messages: list[dict[str, Any]], persona: dict[str, Any] | None) -> list[dict[str, str]]:
    """Chat messages with plain-text content (audio parts contribute their transcript)."""
    plain = [{"role": m["role"], "content": content_text(m.get("content", "")).strip()} for m in messages]
    return with_persona(plain, persona)


def _chat_messages(messages: list[dict[str, Any]], persona: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Chat messages as stored (audio parts reference blobs by sha256), persona card as the system message."""
    return with_persona(messages, persona)


def _json_or_none(v: Any) -> str | None:
    return json.dumps(v, sort_keys=True) if v else None


class DatasetService(Service):
    @action("data.read")
    def rows(self, filters: SnapshotFilters) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The snapshot's rows (sorted, deterministic) and label counts."""
        bad = set(filters.label_sources) - set(LABEL_SOURCES)
        if bad:
            raise InvalidInput(f"unknown label source(s) {sorted(bad)}; use {list(LABEL_SOURCES)}")
        ai_ids = None
        if filters.labels.ai_fill:
            q = select(Rollout.id)
            if filters.policy_ids:
                q = q.where(Rollout.policy_id.in_(filters.policy_ids))
            if filters.rounds is not None:
                q = q.where(Rollout.round.in_(filters.rounds))
            ai_ids = list(self.ctx.tx(lambda s: s.scalars(q).all()))
        labels, counts = LabelService(self.ctx).build(filters.campaign_ids, filters.labels, ai_ids)
        labels = [x for x in labels if x.source in filters.label_sources]
        excluded = set(filters.exclude_prompt_ids)
        if filters.exclude_shortcut:
            from earmark.services.catalog import CatalogService

            excluded |= set(CatalogService(self.ctx).shortcut_prompt_ids())

        def read(s: Session) -> list[dict[str, Any]]:
            ids = {i for x in labels for i in (x.chosen_rollout_id, x.rejected_rollout_id)}
            ro = {r.id: r for r in s.scalars(select(Rollout).where(Rollout.id.in_(ids)))}
            prompts = {
                p.id: p for p in s.scalars(select(Prompt).where(Prompt.id.in_({r.prompt_id for r in ro.values()})))
            }
            personas: dict[int | None, dict[str, Any]] = {
                p.id: {"name": p.name, **p.card}
                for p in s.scalars(
                    select(Persona).where(Persona.id.in_({p.persona_id for p in prompts.values() if p.persona_id}))
                )
            }
            out = []
            for lab in labels:
                c, r = ro[lab.chosen_rollout_id], ro[lab.rejected_rollout_id]
                p = prompts[c.prompt_id]
                if list(c.token_ids) == list(r.token_ids) and c.text == r.text:
                    continue  # identical responses: no preference to learn
                if filters.policy_ids and (
                    c.policy_id not in filters.policy_ids or r.policy_id not in filters.policy_ids
                ):
                    continue
                if filters.rounds is not None and (c.round not in filters.rounds or r.round not in filters.rounds):
                    continue
                if filters.regimes and p.regime not in filters.regimes:
                    continue
                if filters.splits and p.split not in filters.splits:
                    continue
                if p.id in excluded:
                    continue
                context = _history(c.messages) or list(p.messages)  # rows stored without history
                out.append(
                    {
                        "row_id": f"{c.id}>{r.id}",
                        "prompt_id": p.id,
                        "prompt_external_id": p.external_id,
                        "regime": p.regime,
                        "prompt_messages": json.dumps(_plain_messages(context, personas.get(p.persona_id))),
                        "prompt_chat": json.dumps(_chat_messages(context, personas.get(p.persona_id))),
                        "tools": _json_or_none(p.tools),
                        "chosen_tool_calls": _json_or_none(c.tool_calls),
                        "rejected_tool_calls": _json_or_none(r.tool_calls),
                        "chosen_timeline": _json_or_none(c.timeline),
                        "rejected_timeline": _json_or_none(r.timeline),
                        "reference": json.dumps(p.reference) if p.reference is not None else None,
                        "chosen_text": c.text,
                        "rejected_text": r.text,
                        "chosen_ids": list(c.token_ids),
                        "rejected_ids": list(r.token_ids),
                        "chosen_rollout_id": c.id,
                        "rejected_rollout_id": r.id,
                        "chosen_audio_sha256": c.audio_sha256,
                        "rejected_audio_sha256": r.audio_sha256,
                        "policy_id": c.policy_id,
                        "round": c.round,
                        "label_source": lab.source,
                        "margin": lab.margin,
                        "weight": lab.weight,
                        "comparison_id": lab.comparison_id,
                        "judgment_ids": list(lab.judgment_ids),
                        "votes": lab.votes,
                    }
                )
            return sorted(out, key=lambda x: (x["prompt_id"], x["row_id"]))

        rows = self.ctx.tx(read)
        return rows, counts

    @action("training.run")
    def build(self, name: str, filters: SnapshotFilters) -> Dataset:
        """Freeze the selection: Parquet to the blob store first, then the manifest row."""
        self.ctx.require("training.run")
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, counts = self.rows(filters)
        if not rows:
            raise InvalidInput(
                "the filters select no preference pairs; check campaign ids, label sources and "
                "policy versions (or enable AI labels with labels.ai_fill)"
            )
        content_sha = hashlib.sha256(_canonical(rows)).hexdigest()
        existing = self.ctx.tx(
            lambda s: s.scalar(select(Dataset).where(Dataset.name == name, Dataset.content_sha256 == content_sha))
        )
        if existing is not None:
            return existing
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf, compression="zstd")
        blob = self.ctx.blobs.put_bytes(buf.getvalue())
        by_source = {src: sum(r["label_source"] == src for r in rows) for src in LABEL_SOURCES}
        manifest = {
            "schema_version": SNAPSHOT_SCHEMA_VERSION,
            "row_count": len(rows),
            "content_sha256": content_sha,
            "parquet_sha256": blob.sha256,
            "parquet_bytes": blob.bytes,
            "label_counts": by_source,
            "dropped": counts.get("dropped", {}),
            "columns": list(rows[0]),
            "lineage": "row -> chosen_rollout_id/rejected_rollout_id -> prompts, policies; "
            "row -> comparison_id/judgment_ids -> judgments, raters",
        }

        def write(s: Session) -> Dataset:
            from earmark.services.blob_service import record_blob

            record_blob(
                s,
                sha256=blob.sha256,
                uri=blob.uri,
                bytes=blob.bytes,
                mime="application/vnd.apache.parquet",
                sample_rate=None,
                channels=None,
                duration_s=None,
            )
            s.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"dataset:{name}"))))
            version = (s.scalar(select(func.max(Dataset.version)).where(Dataset.name == name)) or 0) + 1
            ds = Dataset(
                name=name,
                version=version,
                filters=filters.model_dump(mode="json"),
                manifest=manifest,
                content_sha256=content_sha,
                uri=blob.uri,
                row_count=len(rows),
            )
            s.add(ds)
            s.flush()
            self.ctx.audit(s, "datasets.build", "dataset", ds.id, name=name, version=version, rows=len(rows))
            return ds

        return self.ctx.tx(write)

    @action("data.read")
    def candidates(
        self,
        *,
        prompt_ids: list[int] | None = None,
        policy_ids: list[int] | None = None,
        rounds: list[int] | None = None,
        regimes: list[str] | None = None,
        splits: list[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rollouts with their prompt in chat form and their scores per dimension (latest version of
        each reward model; several models on one dimension are averaged), for best-of-N selection.
        Composition happens at the edge (reward_models.composition), not here."""
        self.ctx.require("data.read")

        def read(s: Session) -> list[dict[str, Any]]:
            q = select(Rollout, Prompt).join(Prompt, Prompt.id == Rollout.prompt_id).order_by(Rollout.id)
            if prompt_ids is not None:
                q = q.where(Rollout.prompt_id.in_(prompt_ids))
            if policy_ids:
                q = q.where(Rollout.policy_id.in_(policy_ids))
            if rounds is not None:
                q = q.where(Rollout.round.in_(rounds))
            if regimes:
                q = q.where(Prompt.regime.in_(regimes))
            if splits:
                q = q.where(Prompt.split.in_(splits))
            pairs = s.execute(q).all()
            personas: dict[int | None, dict[str, Any]] = {
                p.id: {"name": p.name, **p.card}
                for p in s.scalars(
                    select(Persona).where(Persona.id.in_({p.persona_id for _, p in pairs if p.persona_id}))
                )
            }
            return [
                {
                    "rollout_id": ro.id,
                    "prompt_id": p.id,
                    "prompt_external_id": p.external_id,
                    "regime": p.regime,
                    "policy_id": ro.policy_id,
                    "round": ro.round,
                    "prompt_chat": _chat_messages(
                        _history(ro.messages) or list(p.messages), personas.get(p.persona_id)
                    ),
                    "reference": p.reference,
                    "tools": p.tools,
                    "text": ro.text,
                    "token_ids": list(ro.token_ids),
                    "audio_sha256": ro.audio_sha256,
                    "tool_calls": ro.tool_calls,
                    "timeline": ro.timeline,
                }
                for ro, p in pairs
            ]

        out = self.ctx.tx(read)
        from earmark.services.scores import ScoreService

        per_model = ScoreService(self.ctx).by_dimension([c["rollout_id"] for c in out])
        sums: dict[int, dict[str, list[float]]] = {}
        for key, by_rollout in per_model.items():
            dim = key.split("/", 1)[1]
            for rid, v in by_rollout.items():
                sums.setdefault(rid, {}).setdefault(dim, []).append(float(v))
        for c in out:
            c["scores"] = {d: sum(v) / len(v) for d, v in sums.get(c["rollout_id"], {}).items()}
        return out

    @action("data.read")
    def get(self, name: str, version: int | None = None) -> Dataset:
        q = select(Dataset).where(Dataset.name == name)
        q = q.where(Dataset.version == version) if version else q.order_by(Dataset.version.desc()).limit(1)
        ds = self.ctx.tx(lambda s: s.scalar(q))
        if ds is None:
            raise NotFound(
                f"dataset {name}{' v' + str(version) if version else ''} does not exist; "
                "build it with `earmark dataset build`"
            )
        return ds

    @action("data.read")
    def load(self, ds: Dataset) -> Any:  # a pyarrow.Table
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(self.ctx.blobs.get_bytes(ds.manifest["parquet_sha256"])))

    @action("data.lineage")
    def lineage(self, ds: Dataset, row_id: str) -> dict[str, Any]:
        """From an exported row back to its rollouts, policy versions, judgments and raters."""
        from earmark.store.models import Judgment, Policy, User

        table = self.load(ds).to_pylist()
        row = next((r for r in table if r["row_id"] == row_id), None)
        if row is None:
            raise NotFound(f"row {row_id!r} is not in {ds.name} v{ds.version}")

        def read(s: Session) -> dict[str, Any]:
            ro = s.execute(
                select(Rollout.id, Rollout.prompt_id, Policy.name, Policy.version, Rollout.round)
                .join(Policy, Policy.id == Rollout.policy_id)
                .where(Rollout.id.in_([row["chosen_rollout_id"], row["rejected_rollout_id"]]))
            ).all()
            js = s.execute(
                select(Judgment.id, User.username, Judgment.preference, Judgment.created_at)
                .join(User, User.id == Judgment.rater_id)
                .where(Judgment.id.in_(row["judgment_ids"]))
            ).all()
            return {"row": row, "rollouts": [dict(r._mapping) for r in ro], "judgments": [dict(j._mapping) for j in js]}

        return self.ctx.tx(read)


def _history(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation before the final (compared) assistant turn."""
    msgs = list(messages or [])
    return msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs


__all__ = ["DatasetService", "PreferenceLabel", "SnapshotFilters"]
