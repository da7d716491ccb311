"""Personas, prompts and policies: import from files, register, look up.

Imports validate every line before writing anything: a file with one bad line writes nothing and the
error names the line, the field and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark.domain.records import PersonaCreate
from earmark.errors import InvalidInput, NotFound
from earmark.security import action
from earmark.services.context import Service
from earmark.store.models import Persona, Policy, Prompt

MAX_IMPORT_ERRORS_SHOWN = 5


@dataclass
class ImportReport:
    added: int
    skipped: int
    ids: dict[str, int]


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def read_jsonl(path: Path) -> list[tuple[int, Any]]:
    """Parse a JSONL file into (line number, object); bad UTF-8 or JSON is reported with its line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}; check the path") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(f"{path}:{line}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    out = []
    for no, row in enumerate(text.splitlines(), 1):
        if not row.strip():
            continue
        try:
            out.append((no, json.loads(row)))
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{no}: invalid JSON ({exc.msg}); each line must be one JSON object") from None
    if not out:
        raise InvalidInput(f"{path} has no records; expected one JSON object per line")
    return out


def _validate_all(records: Iterable[tuple[int, Any]], model: type[BaseModel], source: str) -> list[Any]:
    good, errors = [], []
    for no, obj in records:
        try:
            good.append(model.model_validate(obj))
        except ValidationError as exc:
            errors.append(f"{source}:{no}: {_format_validation(exc)}")
    if errors:
        shown = "\n  ".join(errors[:MAX_IMPORT_ERRORS_SHOWN])
        more = (
            f"\n  ... and {len(errors) - MAX_IMPORT_ERRORS_SHOWN} more" if len(errors) > MAX_IMPORT_ERRORS_SHOWN else ""
        )
        raise InvalidInput(f"{len(errors)} invalid record(s); nothing was imported:\n  {shown}{more}")
    return good


class CatalogService(Service):
    # ---- personas -------------------------------------------------------------------------------
    @action("catalog.write")
    def import_personas(self, records: list[dict[str, Any]] | Path, source: str = "personas") -> ImportReport:
        self.ctx.require("catalog.write")
        rows = read_jsonl(records) if isinstance(records, Path) else list(enumerate(records, 1))
        personas: list[PersonaCreate] = _validate_all(
            rows, PersonaCreate, str(records) if isinstance(records, Path) else source
        )

        def write(s: Session) -> ImportReport:
            added = 0
            for p in personas:
                res = s.execute(
                    insert(Persona)
                    .values(name=p.name, card=p.card())
                    .on_conflict_do_nothing(index_elements=["name"])
                    .returning(Persona.id)
                )
                added += len(res.all())
            ids = dict(
                s.execute(select(Persona.name, Persona.id).where(Persona.name.in_([p.name for p in personas]))).all()
            )
            self.ctx.audit(s, "personas.import", "persona", None, added=added, total=len(personas))
            return ImportReport(added, len(personas) - added, ids)

        return self.ctx.tx(write)

    @action("catalog.read")
    def persona(self, name: str) -> Persona:
        row = self.ctx.tx(lambda s: s.scalar(select(Persona).where(Persona.name == name)))
        if row is None:
            raise NotFound(f"persona {name!r} is not registered; import it with `earmark personas import FILE`")
        return row

    # ---- prompts --------------------------------------------------------------------------------
    @action("catalog.write")
    def import_prompts(
        self,
        records: list[dict[str, Any]] | Path,
        source: str = "prompts",
        *,
        on_conflict: str = "error",
        audio_root: Path | None = None,
    ) -> ImportReport:
        """Import prompts through the one interchange import (services/interchange.py): all-or-nothing
        with their audio, strict values, the 1 MB limits, ``on_conflict`` for changed prompts (identical
        ones are "already present"). A Path is an earmark JSONL file (audio paths under its folder, or
        ``audio_root``); a list holds the same records as dicts (audio paths under ``audio_root``,
        default the current directory). ``skipped`` counts the prompts that were already stored."""
        self.ctx.require("catalog.write")
        from earmark.services.interchange import InterchangeService

        interchange = InterchangeService(self.ctx)
        if isinstance(records, Path):
            summary = interchange.import_file(
                records,
                fmt="earmark",
                on_conflict=on_conflict,
                audio_root=audio_root,
                only_kinds=("prompt",),
                prompt_ids=True,
            )
        elif not records:
            return ImportReport(0, 0, {})
        else:
            summary = interchange.import_records(
                records, kind="prompt", source=source, on_conflict=on_conflict, audio_root=audio_root, prompt_ids=True
            )
        added = summary.added.get("prompt", 0)
        return ImportReport(added, summary.records - added, summary.prompt_ids)

    @action("catalog.read")
    def prompts(
        self, *, regime: str | None = None, split: str | None = None, external_ids: list[str] | None = None
    ) -> list[Prompt]:
        self.ctx.require("catalog.read")
        q = select(Prompt).order_by(Prompt.id)
        if regime:
            q = q.where(Prompt.regime == regime)
        if split:
            q = q.where(Prompt.split == split)
        if external_ids is not None:
            q = q.where(Prompt.external_id.in_(external_ids))
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    @action("catalog.read")
    def persona_cards(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        ids = list({i for i in ids if i is not None})
        rows = self.ctx.tx(
            lambda s: s.execute(select(Persona.id, Persona.name, Persona.card).where(Persona.id.in_(ids))).all()
        )
        return {pid: {"name": name, **card} for pid, name, card in rows}

    # ---- modality-shortcut audit ----------------------------------------------------------------
    SHORTCUT_TAGS = ("shortcut:retain", "shortcut:remove")

    @action("catalog.write")
    def record_shortcut_audit(self, results: list[dict[str, Any]]) -> int:
        """Store per-prompt audit results: the decision as a prompt tag (so datasets can exclude
        ``shortcut:remove`` prompts), the full result in the audit log. Returns prompts updated."""
        self.ctx.require("catalog.write")

        def write(s: Session) -> int:
            n = 0
            for r in results:
                p = s.get(Prompt, int(r["prompt_id"]), with_for_update=True)
                if p is None:
                    raise NotFound(f"prompt {r['prompt_id']} does not exist")
                tags = [t for t in (p.tags or []) if t not in self.SHORTCUT_TAGS]
                p.tags = [*tags, f"shortcut:{r['decision']}"]
                self.ctx.audit(
                    s,
                    "prompts.shortcut_audit",
                    "prompt",
                    p.id,
                    **{k: r.get(k) for k in ("decision", "reasons", "answer_in_text", "text_only_accuracy")},
                )
                n += 1
            return n

        return self.ctx.tx(write)

    @action("catalog.read")
    def shortcut_prompt_ids(self) -> list[int]:
        """Prompts the audit decided to remove."""
        q = select(Prompt.id).where(Prompt.tags.contains(["shortcut:remove"]))
        return list(self.ctx.tx(lambda s: s.scalars(q).all()))

    # ---- policies -------------------------------------------------------------------------------
    @action("catalog.write")
    def register_policy(
        self,
        name: str,
        uri: str,
        *,
        kind: str = "offline",
        parent_id: int | None = None,
        version: int | None = None,
        training_run_id: int | None = None,
        dataset_id: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> Policy:
        """Register a policy version; with no version, the next one after the latest of this name."""
        self.ctx.require("catalog.write")

        def write(s: Session) -> Policy:
            # Serialise version allocation per name so two registrations never pick the same number.
            s.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"policy:{name}"))))
            v = version
            if v is None:
                latest = s.scalar(select(func.max(Policy.version)).where(Policy.name == name))
                v = 0 if latest is None else latest + 1
            existing = s.scalar(select(Policy).where(Policy.name == name, Policy.version == v))
            if existing is not None:
                if existing.uri != uri:
                    raise InvalidInput(
                        f"policy {name} v{v} is already registered with uri {existing.uri}; "
                        "register a new version instead of overwriting"
                    )
                return existing
            row = Policy(
                name=name,
                version=v,
                uri=uri,
                kind=kind,
                parent_id=parent_id,
                training_run_id=training_run_id,
                dataset_id=dataset_id,
                config=config or {},
            )
            s.add(row)
            s.flush()
            self.ctx.audit(s, "policies.register", "policy", row.id, name=name, version=v)
            return row

        return self.ctx.tx(write)

    @action("catalog.read")
    def policy(self, name: str, version: int | None = None) -> Policy:
        q = select(Policy).where(Policy.name == name)
        q = q.where(Policy.version == version) if version is not None else q.order_by(Policy.version.desc()).limit(1)
        row = self.ctx.tx(lambda s: s.scalar(q))
        if row is None:
            what = f"{name} v{version}" if version is not None else name
            raise NotFound(f"policy {what} is not registered; list policies with `earmark policies list`")
        return row

    @action("catalog.read")
    def policies(self) -> list[Policy]:
        return list(self.ctx.tx(lambda s: s.scalars(select(Policy).order_by(Policy.name, Policy.version)).all()))
