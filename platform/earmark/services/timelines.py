"""Duplex timelines: import and export of duplex sessions as JSONL, stereo rendering, metric inputs.

One JSONL line is one session (``DuplexSessionLine``): an ``id``, the ``timeline`` with its audio as
``path`` (relative to the JSONL file), ``base64`` or ``audio_sha256`` (a blob already stored), and
optionally ``persona``, ``tools``, expected ``tool_calls`` and ``source``. The scenario part (user
track, labelled events, meta) becomes a duplex prompt whose ``reference`` is ``{"timeline":
<scenario>, "tool_calls": [...]}``; an assistant side (assistant audio, speech or actions) becomes a
rollout of the policy ``external-<source>`` (version 0) holding the whole timeline.

Import checks every line before writing anything (the error names the line, the field and the
fix), then writes audio blobs (bytes before rows), then all rows in one transaction: a file with
one bad line changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark import audio as audio_mod
from earmark.domain.duplex import AudioTrack, Timeline
from earmark.domain.limits import Limits
from earmark.domain.messages import ToolCall
from earmark.domain.records import NAME_PATTERN, RolloutCreate
from earmark.errors import InvalidInput, NotFound
from earmark.security import action
from earmark.services.catalog import MAX_IMPORT_ERRORS_SHOWN, _format_validation, read_jsonl
from earmark.services.context import Service
from earmark.store import bulk
from earmark.store.models import Persona, Policy, Prompt, Rollout

EXTERNAL_PREFIX = "external-"
AudioMode = Literal["sha", "base64"]


class DuplexSessionLine(BaseModel):
    """One line of the duplex JSONL format."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1,
        max_length=Limits.MAX_NAME_CHARS,
        pattern=NAME_PATTERN,
        description="scenario id; becomes the prompt's external_id",
    )
    source: str = Field(
        default="import",
        max_length=100,
        pattern=NAME_PATTERN,
        description="who produced the assistant side; the policy is external-<source>",
    )
    timeline: Timeline
    persona: str | None = Field(default=None, description="name of a registered persona")
    tools: list[dict[str, Any]] | None = Field(default=None, description="tool schemas offered")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="expected calls; [] = none should fire")
    split: str = Field(default="train", pattern=r"^(train|heldout|test)$")
    tags: list[str] = Field(default_factory=list, max_length=50)
    sample_index: int = Field(default=0, ge=0, lt=Limits.MAX_SAMPLES_PER_PROMPT)

    def has_assistant(self) -> bool:
        a = self.timeline.assistant
        return bool(a.audio_sha256 or a.path or a.base64 or a.speech or a.transcript or self.timeline.actions)


@dataclass
class TimelineImportReport:
    lines: int = 0
    prompts_added: int = 0  # scenarios already stored (same id, same scenario) are not added again
    rollouts_added: int = 0
    prompt_ids: dict[str, int] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)


@dataclass
class _Audio:
    sha256: str
    data: bytes | None  # None: already stored
    duration_s: float


def scenario_part(tl: Timeline) -> Timeline:
    """The scenario of a session: the user side, events and meta, without what the assistant did."""
    return tl.model_copy(update={"assistant": AudioTrack(), "actions": []})


def _audio_part(tl: Timeline) -> dict[str, Any]:
    """The user turn in the chat form (earmark.domain.messages): the user track as an audio part with its transcript."""
    part: dict[str, Any] = {"type": "audio", "audio_sha256": tl.user.audio_sha256}
    if tl.user.transcript:
        part["transcript"] = tl.user.transcript
    return part


class TimelineService(Service):
    # ---- import ---------------------------------------------------------------------------------
    def _audio(self, track: AudioTrack, base_dir: Path | None, where: str) -> _Audio | None:
        if track.audio_sha256:
            from earmark.services.blob_service import BlobService

            try:
                blob = BlobService(self.ctx).get(track.audio_sha256)
            except NotFound:
                raise InvalidInput(
                    f"{where}: audio_sha256 {track.audio_sha256[:12]}... is not in the blob store; "
                    "give the audio as path or base64 instead"
                ) from None
            if blob.channels != 1:
                raise InvalidInput(
                    f"{where}: blob {blob.sha256[:12]}... has {blob.channels} channels; each track is one mono clip"
                )
            return _Audio(blob.sha256, None, float(blob.duration_s or 0.0))
        data = audio_mod.read_source(track.path, track.base64, base_dir, where)
        if data is None:
            return None
        try:
            info = audio_mod.probe(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc.message}") from None
        if info.channels != 1:
            raise InvalidInput(
                f"{where}: audio has {info.channels} channels; each track is one mono clip "
                "(put the user and the assistant on their own tracks)"
            )
        return _Audio(hashlib.sha256(data).hexdigest(), data, info.duration_s)

    def _check_line(self, line: DuplexSessionLine, base_dir: Path | None, where: str) -> dict[str, _Audio | None]:
        tl = line.timeline
        found = {
            side: self._audio(getattr(tl, side), base_dir, f"{where}: {side} track") for side in ("user", "assistant")
        }
        if found["user"] is None:
            raise InvalidInput(f"{where}: the user track has no audio; set timeline.user.path, base64 or audio_sha256")
        for side, a in found.items():
            spans = getattr(tl, side).speech
            if a is not None and spans and tl.seconds(spans[-1].end) > a.duration_s + tl.chunk_s + 1e-6:
                raise InvalidInput(
                    f"{where}: {side} speech span [{spans[-1].start},{spans[-1].end}) ends at "
                    f"{tl.seconds(spans[-1].end):.2f} s but the {side} audio lasts {a.duration_s:.2f} s; "
                    "fix the spans or the audio"
                )
        if found["assistant"] is None and tl.assistant.speech:
            raise InvalidInput(
                f"{where}: assistant speech spans without assistant audio; add "
                "timeline.assistant.path/base64/audio_sha256 or drop the spans"
            )
        return found

    @staticmethod
    def _stored(tl: Timeline, found: dict[str, _Audio | None]) -> Timeline:
        """The timeline as stored: audio named by sha256 only."""
        upd = {}
        for side, a in found.items():
            track = getattr(tl, side)
            upd[side] = track.model_copy(update={"audio_sha256": a.sha256 if a else None, "path": None, "base64": None})
        return tl.model_copy(update=upd)

    @action("catalog.write")  # and rollouts.write, checked inside
    def import_jsonl(self, records: Path | list[dict[str, Any]], source: str = "sessions") -> TimelineImportReport:
        """Import duplex sessions; validates all lines first (errors name ``file:line``), writes nothing on error."""
        self.ctx.require("catalog.write")
        self.ctx.require("rollouts.write")
        base_dir = records.parent if isinstance(records, Path) else None
        src = str(records) if isinstance(records, Path) else source
        rows = read_jsonl(records) if isinstance(records, Path) else list(enumerate(records, 1))
        errors: list[str] = []
        checked: list[tuple[int, DuplexSessionLine, Timeline]] = []
        blobs: dict[str, bytes] = {}
        durations: dict[str, float] = {}
        for no, obj in rows:
            where = f"{src}:{no}"
            try:
                line = DuplexSessionLine.model_validate(obj)
                found = self._check_line(line, base_dir, where)
            except ValidationError as exc:
                errors.append(f"{where}: {_format_validation(exc)}")
                continue
            except InvalidInput as exc:
                errors.append(exc.message)
                continue
            for a in found.values():
                if a is not None:
                    durations[a.sha256] = a.duration_s
                    if a.data is not None:
                        blobs[a.sha256] = a.data
            checked.append((no, line, self._stored(line.timeline, found)))
        errors += self._check_consistency(checked, src)
        if errors:
            shown = "\n  ".join(errors[:MAX_IMPORT_ERRORS_SHOWN])
            more = (
                f"\n  ... and {len(errors) - MAX_IMPORT_ERRORS_SHOWN} more"
                if len(errors) > MAX_IMPORT_ERRORS_SHOWN
                else ""
            )
            raise InvalidInput(f"{len(errors)} invalid line(s); nothing was imported:\n  {shown}{more}")
        from earmark.services.blob_service import BlobService

        for data in blobs.values():  # bytes (and blob rows) before any prompt or rollout row
            BlobService(self.ctx).put_audio(data)
        return self.ctx.tx(lambda s: self._write(s, checked, durations))

    def _check_consistency(self, checked: list[tuple[int, DuplexSessionLine, Timeline]], src: str) -> list[str]:
        errors: list[str] = []
        scenario_of: dict[str, tuple[int, dict[str, Any]]] = {}
        keys: dict[tuple[str, str, int], int] = {}
        for no, line, tl in checked:
            scen = {"timeline": scenario_part(tl).to_json(), "tool_calls": [c.model_dump() for c in line.tool_calls]}
            first = scenario_of.setdefault(line.id, (no, scen))
            if first[1] != scen:
                errors.append(
                    f"{src}:{no}: id {line.id!r} is on line {first[0]} with a different scenario "
                    "(user audio, events or expected tool calls); give each scenario its own id"
                )
                continue
            key = (line.id, line.source, line.sample_index)
            if line.has_assistant() and keys.setdefault(key, no) != no:
                errors.append(
                    f"{src}:{no}: id {line.id!r}, source {line.source!r}, sample_index {line.sample_index} "
                    f"repeats line {keys[key]}; set a different sample_index"
                )
        ids = list(scenario_of)
        existing: dict[str, Any] = dict(
            self.ctx.tx(
                lambda s: s.execute(
                    select(Prompt.external_id, Prompt.reference).where(Prompt.external_id.in_(ids))
                ).all()
            )
        )
        for pid, (no, scen) in scenario_of.items():
            if pid in existing and existing[pid] != scen:
                errors.append(f"{src}:{no}: a prompt {pid!r} with a different scenario is already stored; use a new id")
        personas = {line.persona for _, line, _ in checked if line.persona}
        known = set(self.ctx.tx(lambda s: s.scalars(select(Persona.name).where(Persona.name.in_(personas))).all()))
        for no, line, _ in checked:
            if line.persona and line.persona not in known:
                errors.append(
                    f"{src}:{no}: unknown persona {line.persona!r}; import it first with `earmark personas import`"
                )
        return errors

    def _write(
        self, s: Session, checked: list[tuple[int, DuplexSessionLine, Timeline]], durations: dict[str, float]
    ) -> TimelineImportReport:
        rep = TimelineImportReport(lines=len(checked))
        personas = dict(s.execute(select(Persona.name, Persona.id)).all())
        for _, line, tl in checked:
            if line.id in rep.prompt_ids:
                continue
            user_sha = tl.user.audio_sha256
            res = s.execute(
                insert(Prompt)
                .values(
                    external_id=line.id,
                    regime="duplex",
                    messages=[{"role": "user", "content": [_audio_part(tl)]}],
                    audio_sha256=user_sha,
                    tools=line.tools,
                    persona_id=personas.get(line.persona) if line.persona else None,
                    reference={
                        "timeline": scenario_part(tl).to_json(),
                        "tool_calls": [c.model_dump() for c in line.tool_calls],
                    },
                    split=line.split,
                    tags=sorted({"duplex", *line.tags}),
                )
                .on_conflict_do_nothing(index_elements=["external_id"])
                .returning(Prompt.id)
            )
            rep.prompts_added += len(res.all())
            rep.prompt_ids[line.id] = s.scalars(select(Prompt.id).where(Prompt.external_id == line.id)).one()
        rollouts = []
        for _, line, tl in checked:
            if not line.has_assistant():
                continue
            policy_id = self._external_policy(s, line.source)
            rep.policies = sorted({*rep.policies, EXTERNAL_PREFIX + line.source})
            prompt_msgs = [{"role": "user", "content": [_audio_part(tl)]}]
            calls = tl.tool_calls()
            reply: dict[str, Any] = {"role": "assistant", "content": tl.assistant.transcript}
            if calls:
                reply["tool_calls"] = [c.model_dump() for c in calls]
            sha = tl.assistant.audio_sha256
            rollouts.append(
                RolloutCreate(
                    prompt_id=rep.prompt_ids[line.id],
                    policy_id=policy_id,
                    sample_index=line.sample_index,
                    messages=[*prompt_msgs, reply],
                    text=tl.assistant.transcript,
                    audio_sha256=sha,
                    duration_s=durations.get(sha) if sha else None,
                    sampling={"source": line.source},
                    tool_calls=calls or None,
                    timeline=tl.to_json(),
                )
            )
        if rollouts:
            # Identity ids only grow, so rows this insert added are the ones above the previous maximum
            # (ingest_rollouts returns ids for re-sent keys too).
            before = s.scalar(select(Rollout.id).order_by(Rollout.id.desc()).limit(1)) or 0
            ids = bulk.ingest_rollouts(s, rollouts)
            rep.rollouts_added = sum(1 for rid in ids.values() if rid > before)
        self.ctx.audit(
            s,
            "timelines.import",
            "prompt",
            None,
            prompts=rep.prompts_added,
            rollouts=rep.rollouts_added,
            lines=len(checked),
        )
        return rep

    @staticmethod
    def _external_policy(s: Session, source: str) -> int:
        name = EXTERNAL_PREFIX + source
        s.execute(
            insert(Policy)
            .values(name=name, version=0, uri=f"external:{source}", kind="external", config={})
            .on_conflict_do_nothing(index_elements=["name", "version"])
        )
        return s.scalars(select(Policy.id).where(Policy.name == name, Policy.version == 0)).one()

    # ---- export ---------------------------------------------------------------------------------
    @action("data.read")
    def export_jsonl(
        self,
        out: Path | None = None,
        *,
        audio: AudioMode = "sha",
        policy_id: int | None = None,
        scenarios_without_rollouts: bool = True,
    ) -> list[dict[str, Any]]:
        """Duplex prompts and their rollouts' timelines as import lines (``audio``: sha or base64).

        One line per rollout with a timeline (the whole session), plus one per scenario without one
        (the scenario alone) unless ``scenarios_without_rollouts`` is False."""
        self.ctx.require("data.read")
        if audio not in ("sha", "base64"):
            raise InvalidInput(f"audio={audio!r}: use 'sha' (blobs stay in the store) or 'base64' (self-contained)")
        q = (
            select(Prompt, Persona.name)
            .outerjoin(Persona, Persona.id == Prompt.persona_id)
            .where(Prompt.regime == "duplex")
            .order_by(Prompt.id)
        )
        rq = (
            select(Rollout, Policy.name)
            .join(Policy, Policy.id == Rollout.policy_id)
            .where(Rollout.timeline.is_not(None))
            .order_by(Rollout.id)
        )
        if policy_id is not None:
            rq = rq.where(Rollout.policy_id == policy_id)

        def read(s: Session) -> tuple[list[Any], list[Any]]:
            return list(s.execute(q).all()), list(s.execute(rq).all())

        prompts, rolls = self.ctx.tx(read)
        by_prompt: dict[int, list[tuple[Rollout, str]]] = {}
        for r, pname in rolls:
            by_prompt.setdefault(r.prompt_id, []).append((r, pname))
        lines = []
        for p, persona in prompts:
            ref = p.reference or {}
            if "timeline" not in ref:
                continue
            base = {
                "id": p.external_id,
                "tool_calls": ref.get("tool_calls") or [],
                "split": p.split,
                "tags": [t for t in (p.tags or []) if t != "duplex"],
            }
            base |= {k: v for k, v in (("persona", persona), ("tools", p.tools)) if v}
            for r, pname in by_prompt.get(p.id, []):
                src = pname[len(EXTERNAL_PREFIX) :] if pname.startswith(EXTERNAL_PREFIX) else pname
                lines.append(
                    {
                        **base,
                        "source": src,
                        "sample_index": r.sample_index,
                        "timeline": self._with_audio(r.timeline, audio),
                    }
                )
            if scenarios_without_rollouts and p.id not in by_prompt:
                lines.append({**base, "timeline": self._with_audio(ref["timeline"], audio)})
        if out is not None:
            out.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
        return lines

    def _with_audio(self, tl: dict[str, Any] | None, mode: AudioMode) -> dict[str, Any] | None:
        if mode == "sha" or tl is None:
            return tl
        tl = json.loads(json.dumps(tl))
        for side in ("user", "assistant"):
            track = tl.get(side) or {}
            if sha := track.pop("audio_sha256", None):
                track["base64"] = base64.b64encode(self.ctx.blobs.get_bytes(sha)).decode()
        return tl

    # ---- listening and metrics ------------------------------------------------------------------
    @action("data.read")
    def render_wav(self, timeline: Timeline | dict[str, Any]) -> bytes:
        """Stereo WAV of a stored timeline: user left, assistant right, padded to the timeline's length."""
        self.ctx.require("data.read")
        tl = timeline if isinstance(timeline, Timeline) else Timeline.model_validate(timeline)
        tracks = {}
        for side in ("user", "assistant"):
            sha = getattr(tl, side).audio_sha256
            if sha:
                samples, sr = audio_mod.decode(self.ctx.blobs.get_bytes(sha))
                tracks[side] = (samples.mean(axis=1) if samples.ndim == 2 else samples, sr)
        if not tracks:
            raise InvalidInput("the timeline names no stored audio on either track; import its audio first")
        sr = next(iter(tracks.values()))[1]
        silent = (np.zeros(1, dtype=np.float32), sr)
        return audio_mod.stereo_wav(
            tracks.get("user", silent), tracks.get("assistant", silent), duration_s=tl.duration_s
        )

    @action("data.read")
    def render_rollout(self, rollout_id: int) -> bytes:
        tl = self.ctx.tx(lambda s: s.scalar(select(Rollout.timeline).where(Rollout.id == rollout_id)))
        if tl is None:
            raise NotFound(
                f"rollout {rollout_id} has no duplex timeline (or does not exist); list duplex "
                "rollouts with `earmark duplex export`"
            )
        return self.render_wav(tl)

    @action("data.read")
    def rollout_timelines(self, rollout_ids: list[int]) -> dict[int, dict[str, Any]]:
        """rollout id -> timeline JSON, for the rollouts that have one (scoring inputs)."""
        self.ctx.require("data.read")
        q = select(Rollout.id, Rollout.timeline).where(Rollout.id.in_(list(rollout_ids)), Rollout.timeline.is_not(None))
        return dict(self.ctx.tx(lambda s: s.execute(q).all()))

    @action("data.read")
    def evaluation_rows(self, policy_id: int) -> list[dict[str, Any]]:
        """Per duplex rollout of a policy: its timeline, the scenario reference and its tool calls."""
        self.ctx.require("data.read")
        q = (
            select(Rollout.id, Prompt.external_id, Rollout.timeline, Prompt.reference, Rollout.tool_calls)
            .join(Prompt, Prompt.id == Rollout.prompt_id)
            .where(Rollout.policy_id == policy_id, Prompt.regime == "duplex", Rollout.timeline.is_not(None))
            .order_by(Rollout.id)
        )
        return [
            {
                "rollout_id": r.id,
                "external_id": r.external_id,
                "timeline": r.timeline,
                "reference": r.reference or {},
                "tool_calls": r.tool_calls,
            }
            for r in self.ctx.tx(lambda s: s.execute(q).all())
        ]
