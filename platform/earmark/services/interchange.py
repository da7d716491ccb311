"""Import outside files all-or-nothing, with their audio; see earmark.interchange for the formats.

How an import runs (one database transaction):
1. The adapter streams records; each is validated by the earmark interchange model of its kind
   (limits, NaN/Inf/NUL/surrogates refused with InvalidInput naming file:line, field and fix).
2. Audio (paths confined to the audio root, base64, or URLs when allowed) is decoded and checked,
   then written to a private staging folder under its sha256 - never to the blob store yet.
3. Rows stream by COPY into temporary staging tables while the file is read (one COPY per run of one
   kind; rows of another kind wait in batches of ``BATCH_ROWS``).
4. Set-based checks on the staged rows: duplicates inside the file, unknown personas, prompts,
   responses and audio references, and conflicts with stored rows (``--on-conflict``: ``error``, the
   default, refuses changed content; ``skip`` keeps the stored rows; ``update`` replaces them).
   Identical rows are always "unchanged", so re-importing a file is a no-op.
5. Rows are inserted/updated from staging; the staged blobs are published to the blob store; then
   the transaction commits. If anything fails - a bad line 500, a conflict, the commit itself - the
   rows roll back and the blobs this import published are deleted again, so a failed import leaves
   no rows and no blob files (blobs that existed before are never touched).

Memory bound: at most ``BATCH_ROWS`` validated rows per kind, one source line (``MAX_LINE_BYTES``), one audio
clip (``Limits.MAX_AUDIO_BYTES``) and 64 bytes per distinct staged clip, whatever the file size;
Parquet/Arrow sources are read in record batches of 1024 rows. JSON documents (Label Studio's export
is one JSON array) are parsed whole and are limited to ``MAX_JSON_DOCUMENT_BYTES``.

Imported judgments go to ``external_judgments`` with their source and annotator: they are never
earmark raters' judgments. Responses of outside models become rollouts of ``external`` policies.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg.errors
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from earmark import audio as audio_mod
from earmark.domain.messages import AudioPart, Message
from earmark.errors import Conflict, InvalidInput
from earmark.interchange import ADAPTERS, adapter_for
from earmark.interchange.base import Adapter, Record
from earmark.interchange.records import MODELS, JudgmentImport, PersonaImport, PromptImport, ResponseImport
from earmark.interchange.safety import AudioSource, check_regular_file, refuse_bad_values
from earmark.security import action
from earmark.services.context import Service

BATCH_ROWS = 2000
ON_CONFLICT = ("error", "skip", "update")
MAX_ERRORS_SHOWN = 5
ProgressFn = Callable[[int], None]


@dataclass
class ImportSummary:
    format: str
    source: str
    records: int = 0
    added: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    blobs_added: int = 0
    policies_added: int = 0
    prompt_ids: dict[str, int] = field(default_factory=dict)  # external_id -> id (import_records(prompt_ids=True))

    def line(self) -> str:
        def fmt(d: dict[str, int]) -> str:
            return ", ".join(f"{v} {k}s" for k, v in d.items() if v) or "none"

        return (
            f"{self.records} records ({self.format}): added {fmt(self.added)}; updated {fmt(self.updated)}; "
            f"unchanged {fmt(self.unchanged)}; skipped {fmt(self.skipped)}; {self.blobs_added} new audio blobs, "
            f"{self.policies_added} new external policies"
        )


def _check_on_conflict(on_conflict: str) -> None:
    if on_conflict not in ON_CONFLICT:
        raise InvalidInput(f"--on-conflict {on_conflict!r} is unknown; use one of {', '.join(ON_CONFLICT)}")


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _j(v: Any) -> str | None:
    return None if v is None else _ENCODE(v)


_MESSAGES = TypeAdapter(list[Message])


def _messages_json(messages: list[Message]) -> str:
    return _MESSAGES.dump_json(messages, exclude_none=True).decode()


def _format_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = ".".join(str(x) for x in err["loc"]) or "(root)"
        parts.append(f"field {loc}: {err['msg']}")
    return "; ".join(parts)


STAGE_DDL = {
    "persona": "line int, name text, card jsonb",
    "prompt": "line int, external_id text, regime text, messages jsonb, audio_sha256 text, reference jsonb, "
    "tools jsonb, persona text, split text, tags jsonb",
    "response": "line int, prompt text, policy text, sample_index int, round int, messages jsonb, text text, "
    "audio_sha256 text, tool_calls jsonb",
    "judgment": "line int, source text, external_id text, annotator text, prompt text, a_policy text, a_sample int, "
    "a_round int, b_policy text, b_sample int, b_round int, dimension text, preference float8, tie bool, "
    "both_bad bool, confidence float8, comment text, details jsonb, content_sha256 text",
}
STAGE_COLUMNS = {k: [c.strip().split()[0] for c in v.split(",")] for k, v in STAGE_DDL.items()}


# "Changed" compares what the file says with what is stored; JSON null and SQL NULL are the same absence.
PROMPT_CHANGED = (
    "(p.regime, p.messages, p.audio_sha256, NULLIF(p.reference, 'null'), NULLIF(p.tools, 'null'), p.split, p.tags, "
    "p.persona_id) IS DISTINCT FROM (s.regime, s.messages, s.audio_sha256, NULLIF(s.reference, 'null'), "
    "NULLIF(s.tools, 'null'), s.split, s.tags, pe.id)"
)
RESPONSE_CHANGED = (
    "((ro.text, ro.audio_sha256, NULLIF(ro.tool_calls, 'null')) IS DISTINCT FROM (s.text, s.audio_sha256, "
    "NULLIF(s.tool_calls, 'null')) OR (s.messages IS NOT NULL AND ro.messages IS DISTINCT FROM s.messages))"
)


# A response names its policy; it belongs to the latest version of that name (external ones have only v0).
LATEST_POLICY = "(SELECT DISTINCT ON (name) id, name FROM policies ORDER BY name, version DESC)"


class _Stager:
    """Per-import state: staging tables, the audio staging folder, batches."""

    def __init__(self, session: Session, audio: AudioSource, adapter: Adapter, path: str, source: str) -> None:
        self.s = session
        self.audio = audio
        self.adapter = adapter
        self.path = path
        self.source = source
        self.tag = uuid.uuid4().hex[:10]
        self.tables = {k: f"stage_{k}_{self.tag}" for k in STAGE_DDL}
        self.batches: dict[str, list[tuple[Any, ...]]] = {k: [] for k in STAGE_DDL}
        self.counts: dict[str, int] = dict.fromkeys(STAGE_DDL, 0)
        self.open_kind: str | None = None  # the kind whose COPY is open (self.copy)
        self.cur: Any = None
        self.copy_cm: Any = None
        self.copy: Any = None
        self.dir = Path(tempfile.mkdtemp(prefix="earmark-import-"))
        self.staged: dict[str, dict[str, Any]] = {}  # sha256 -> blob row (bytes are in self.dir)
        self.referenced: dict[str, int] = {}  # audio_sha256 given by reference -> first line
        self.errors: list[str] = []
        for k, ddl in STAGE_DDL.items():
            self.s.execute(text(f"CREATE TEMP TABLE {self.tables[k]} ({ddl}) ON COMMIT DROP"))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- records -> staged rows ------------------------------------------------------------------
    def where(self, rec: Record) -> str:
        return f"{self.path}:{rec.line}" + (
            f" ({rec.kind} from {rec.field_prefix})" if rec.field_prefix else f" ({rec.kind})"
        )

    def add(self, rec: Record) -> None:
        model = MODELS[rec.kind]
        try:
            obj = model.model_validate(rec.data)
        except ValidationError as exc:
            self.errors.append(
                f"{self.where(rec)}: {_format_validation(exc)}; the {self.adapter.name} format expects "
                f"{self.adapter.expected} (earmark {rec.kind} line: `earmark schema earmark`): fix that field"
            )
            if len(self.errors) >= MAX_ERRORS_SHOWN:
                self.raise_errors()
            return
        row = getattr(self, f"_row_{rec.kind}")(obj, rec)
        k = rec.kind
        if self.open_kind is None:
            self._copy_open(k)
        if self.open_kind == k:  # streamed: PostgreSQL ingests while the next lines are parsed
            self.copy.write_row(row)
            self.counts[k] += 1
            return
        b = self.batches[k]
        b.append(row)
        if len(b) >= BATCH_ROWS:  # another kind's batch is full: stream that kind from now on
            self._copy_close()
            self._copy_open(k)

    def raise_errors(self) -> None:
        if self.errors:
            more = "" if len(self.errors) < MAX_ERRORS_SHOWN else "\n  (stopped after the first few; fix these first)"
            raise InvalidInput(
                f"{len(self.errors)} invalid record(s); nothing was imported:\n  " + "\n  ".join(self.errors) + more
            )

    def _stage_bytes(self, data: bytes, where: str) -> str:
        try:
            info = audio_mod.probe(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc.message}") from None
        sha = hashlib.sha256(data).hexdigest()
        if sha not in self.staged:
            (self.dir / sha).write_bytes(data)
            self.staged[sha] = dict(
                sha256=sha,
                bytes=len(data),
                mime=info.mime,
                sample_rate=info.sample_rate,
                channels=info.channels,
                duration_s=info.duration_s,
            )
        return sha

    def _audio(self, part: AudioPart, where: str, line: int) -> AudioPart:
        if part.audio_sha256:
            self.referenced.setdefault(part.audio_sha256, line)
            return part
        data = self.audio.read_path(part.path, where) if part.path else self.audio.read_base64(part.base64 or "", where)
        sha = self._stage_bytes(data, where)
        return AudioPart(type="audio", audio_sha256=sha, transcript=part.transcript)

    def _messages(self, messages: list[Any], rec: Record) -> tuple[str, str | None]:
        """The messages as stored (JSON, audio parts by sha256) and the first audio sha256."""
        first = None
        for mi, msg in enumerate(messages):
            if isinstance(msg.content, str):
                continue
            for i, part in enumerate(msg.content):
                if isinstance(part, AudioPart):
                    msg.content[i] = self._audio(part, f"{self.where(rec)}: messages[{mi}].content[{i}]", rec.line)
                    first = first or msg.content[i].audio_sha256
        return _messages_json(messages), first

    def _row_persona(self, p: PersonaImport, rec: Record) -> tuple[Any, ...]:
        return (rec.line, p.name, _j(p.card()))

    def _row_prompt(self, p: PromptImport, rec: Record) -> tuple[Any, ...]:
        msgs, first = self._messages(p.messages, rec)
        return (
            rec.line,
            p.external_id,
            p.regime.value,
            msgs,
            first,
            _j(p.reference),
            _j(p.tools),
            p.persona,
            p.split,
            _j(p.tags) if p.tags else "[]",
        )

    def _row_response(self, r: ResponseImport, rec: Record) -> tuple[Any, ...]:
        where = self.where(rec)
        msgs = self._messages(r.messages, rec)[0] if r.messages else None
        sha = self._audio(r.audio, f"{where}: audio", rec.line).audio_sha256 if r.audio else None
        calls = [c.model_dump() for c in r.tool_calls] if r.tool_calls else None
        return (rec.line, r.prompt, r.policy, r.sample_index, r.round, msgs, r.text, sha, _j(calls))

    def _row_judgment(self, j: JudgmentImport, rec: Record) -> tuple[Any, ...]:
        body = j.model_dump(mode="json", exclude={"source"})
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return (
            rec.line,
            j.source or self.source,
            j.external_id,
            j.annotator,
            j.prompt,
            j.a.policy,
            j.a.sample_index,
            j.a.round,
            j.b.policy,
            j.b.sample_index,
            j.b.round,
            j.dimension,
            j.preference,
            j.tie,
            j.both_bad,
            j.confidence,
            j.comment,
            _j(j.details),
            digest,
        )

    # One COPY stays open into the staging table of the kind being streamed (a file of one kind is
    # one COPY); rows of other kinds wait in batches of at most BATCH_ROWS until the stream switches.
    def _copy_open(self, kind: str) -> None:
        conn = self.s.connection().connection.driver_connection
        assert conn is not None  # a live psycopg connection inside the import transaction
        cols = ", ".join(STAGE_COLUMNS[kind])
        self.cur = conn.cursor()
        self.copy_cm = self.cur.copy(f"COPY {self.tables[kind]} ({cols}) FROM STDIN")
        self.copy = self.copy_cm.__enter__()
        self.open_kind = kind
        rows = self.batches[kind]
        for row in rows:
            self.copy.write_row(row)
        self.counts[kind] += len(rows)
        rows.clear()

    def _copy_close(self, exc: BaseException | None = None) -> None:
        if self.open_kind is None:
            return
        self.open_kind = None
        try:
            self.copy_cm.__exit__(type(exc) if exc else None, exc, None)
        finally:
            self.cur.close()

    def flush(self) -> None:
        """Finish the open COPY and stage what is left in the batches."""
        self._copy_close()
        for k, rows in self.batches.items():
            if rows:
                self._copy_open(k)
                self._copy_close()

    def abort(self, exc: BaseException) -> None:
        """End an open COPY after a failure (the transaction is rolled back by the caller)."""
        try:
            self._copy_close(exc)
        except Exception:  # noqa: BLE001 - the import already failed with exc; that is the error to show
            pass


class InterchangeService(Service):
    @action("catalog.write")
    def import_file(
        self,
        path: Path,
        *,
        fmt: str | None = None,
        on_conflict: str = "error",
        audio_root: Path | None = None,
        allow_urls: bool = False,
        progress: ProgressFn | None = None,
        only_kinds: tuple[str, ...] | None = None,
        prompt_ids: bool = False,
    ) -> ImportSummary:
        """Import one file all-or-nothing (module doc). Returns what was added/updated/unchanged;
        ``prompt_ids`` fills ``ImportSummary.prompt_ids``."""
        self.ctx.require("catalog.write")
        _check_on_conflict(on_conflict)
        path = Path(path)
        check_regular_file(path, "import file")
        adapter = adapter_for(path, fmt)
        root = Path(audio_root) if audio_root is not None else path.parent
        if not root.is_dir():
            raise InvalidInput(f"--audio-root {root} is not a directory; give the folder that holds the audio")
        audio = AudioSource(path.parent, root=root, allow_urls=allow_urls)
        return self._import(
            adapter.iter_records(path),
            adapter=adapter,
            label=str(path),
            source=f"{adapter.name}:{path.name}",
            audio=audio,
            on_conflict=on_conflict,
            progress=progress,
            only_kinds=only_kinds,
            want_prompt_ids=prompt_ids,
        )

    @action("catalog.write")
    def import_records(
        self,
        records: Iterable[dict[str, Any]],
        *,
        kind: str,
        source: str,
        on_conflict: str = "error",
        audio_root: Path | None = None,
        prompt_ids: bool = False,
    ) -> ImportSummary:
        """Import earmark interchange records of one ``kind`` given as Python dicts (the records of an
        earmark JSONL file) through the same all-or-nothing import as ``import_file``. Errors name
        ``source:N`` (N counts from 1). Audio paths resolve against ``audio_root`` (default: the current
        directory) and must stay under it. ``prompt_ids`` fills ``ImportSummary.prompt_ids``."""
        self.ctx.require("catalog.write")
        _check_on_conflict(on_conflict)
        if kind not in MODELS:
            raise InvalidInput(f"kind {kind!r} is unknown; use one of {', '.join(MODELS)}")
        root = Path(audio_root) if audio_root is not None else Path.cwd()
        if not root.is_dir():
            raise InvalidInput(f"audio_root {root} is not a directory; give the folder that holds the audio")
        adapter = ADAPTERS["earmark"]

        def recs() -> Iterator[Record]:
            for no, obj in enumerate(records, 1):
                where = f"{source}:{no}"
                if not isinstance(obj, dict):
                    raise InvalidInput(f"{where}: a {kind} record must be a dict (one earmark {kind} line)")
                refuse_bad_values(obj, where, adapter.name)
                yield Record(no, kind, {k: v for k, v in obj.items() if k != "kind"})

        return self._import(
            recs(),
            adapter=adapter,
            label=source,
            source=source,
            audio=AudioSource(root, root=root),
            on_conflict=on_conflict,
            want_prompt_ids=prompt_ids,
        )

    def _import(
        self,
        records: Iterator[Record],
        *,
        adapter: Adapter,
        label: str,
        source: str,
        audio: AudioSource,
        on_conflict: str,
        progress: ProgressFn | None = None,
        only_kinds: tuple[str, ...] | None = None,
        want_prompt_ids: bool = False,
    ) -> ImportSummary:
        """The one import mechanism (module doc); ``label`` names the input in errors."""
        published: list[str] = []

        def run(s: Session) -> ImportSummary:
            st = _Stager(s, audio, adapter, label, source)
            try:
                summary = ImportSummary(adapter.name, source)
                for rec in records:
                    if only_kinds is not None and rec.kind not in only_kinds:
                        raise InvalidInput(
                            f"{label}:{rec.line}: this is a {rec.kind} line but this command imports "
                            f"{' and '.join(only_kinds)} lines only: use `earmark import FILE` for mixed files"
                        )
                    st.add(rec)
                    summary.records += 1
                    if progress is not None and summary.records % 1000 == 0:
                        progress(summary.records)
                st.raise_errors()
                st.flush()
                if progress is not None:
                    progress(summary.records)
                if not any(st.counts.values()):
                    raise InvalidInput(f"{label} has no records; expected {adapter.expected}")
                self._check(s, st)
                self._conflicts(s, st, on_conflict, summary)
                uris = self._publish(st, published)  # all checks passed: make the audio visible with the rows
                summary.blobs_added = len(published)
                self._apply(s, st, on_conflict, summary, uris)
                if want_prompt_ids:
                    summary.prompt_ids = dict(
                        s.execute(
                            text(
                                f"SELECT s.external_id, p.id FROM {st.tables['prompt']} s "
                                "JOIN prompts p ON p.external_id = s.external_id"
                            )
                        ).all()
                    )
                self.ctx.audit(
                    s,
                    "interchange.import",
                    "file",
                    None,
                    source=source,
                    records=summary.records,
                    added=summary.added,
                    updated=summary.updated,
                )
                for t in st.tables.values():
                    s.execute(text(f"DROP TABLE IF EXISTS {t}"))
                return summary
            except BaseException as exc:
                st.abort(exc)
                raise
            finally:
                st.close()

        try:
            return self.ctx.tx(run)
        except (sa_exc.DataError, psycopg.errors.DataError) as exc:
            self._unpublish(published)
            orig = exc.orig if isinstance(exc, sa_exc.DataError) else exc
            first = str(orig).splitlines()[0] if orig else str(exc)
            raise InvalidInput(
                f"{label}: the store refused a value ({first}); fix that value in the file and import again"
            ) from None
        except BaseException:
            self._unpublish(published)
            raise

    # ---- publish / undo blobs ------------------------------------------------------------------------
    def _publish(self, st: _Stager, published: list[str]) -> dict[str, str]:
        """Copy staged clips into the blob store; ``published`` collects those that were not there."""
        uris = {}
        for sha in st.staged:
            existed = self.ctx.blobs.exists(sha)
            stored = self.ctx.blobs.put_file(st.dir / sha)
            if not existed:
                published.append(sha)
            if stored.sha256 != sha:  # pragma: no cover - the store hashes what it wrote
                raise InvalidInput(f"staged audio {sha} changed on disk during the import; import again")
            uris[sha] = stored.uri
        return uris

    def _unpublish(self, shas: list[str]) -> None:
        for sha in shas:
            try:
                self.ctx.blobs.delete(sha)
            except Exception:  # noqa: BLE001 - best effort; `earmark blobs sweep` removes what is left
                pass

    # ---- set-based checks and writes -----------------------------------------------------------------
    def _first(self, s: Session, sql: str, **params: Any) -> list[Any]:
        return list(s.execute(text(sql), params).all())

    def _check(self, s: Session, st: _Stager) -> None:
        t = st.tables
        dup_keys = {
            "persona": ("name", "persona"),
            "prompt": ("external_id", "prompt external_id"),
            "response": ("prompt, policy, sample_index, round", "response (prompt, policy, sample_index, round)"),
            "judgment": ("source, external_id", "judgment (source, external_id)"),
        }
        for kind, (cols, what) in dup_keys.items():
            rows = self._first(
                s,
                f"SELECT array_agg(line ORDER BY line), ({cols})::text FROM {t[kind]} GROUP BY {cols} "
                "HAVING count(*) > 1 LIMIT 3",
            )
            if rows:
                lines, key = rows[0]
                raise InvalidInput(
                    f"{st.path}: lines {', '.join(map(str, lines[:5]))} all define {what} {key}; each must be "
                    "unique in a file: remove the repeats or give them distinct ids"
                )
        checks = [
            (
                f"SELECT s.line, s.persona FROM {t['prompt']} s WHERE s.persona IS NOT NULL AND NOT EXISTS "
                f"(SELECT 1 FROM personas p WHERE p.name = s.persona) AND NOT EXISTS "
                f"(SELECT 1 FROM {t['persona']} x WHERE x.name = s.persona) LIMIT 3",
                "field persona: persona {1!r} is not registered",
                "import its persona line first (same file or `earmark personas import`)",
            ),
            (
                f"SELECT s.line, s.prompt FROM {t['response']} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM prompts p WHERE p.external_id = s.prompt) AND NOT EXISTS "
                f"(SELECT 1 FROM {t['prompt']} x WHERE x.external_id = s.prompt) LIMIT 3",
                "field prompt: response to unknown prompt {1!r}",
                "add the prompt line before it or import it first",
            ),
            (
                f"SELECT s.line, s.prompt FROM {t['judgment']} s WHERE NOT EXISTS "
                f"(SELECT 1 FROM prompts p WHERE p.external_id = s.prompt) AND NOT EXISTS "
                f"(SELECT 1 FROM {t['prompt']} x WHERE x.external_id = s.prompt) LIMIT 3",
                "field prompt: judgment of unknown prompt {1!r}",
                "add the prompt line or import it first",
            ),
        ]
        for side in ("a", "b"):
            checks.append(
                (
                    f"SELECT s.line, s.{side}_policy || ' sample ' || s.{side}_sample FROM {t['judgment']} s "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {t['response']} r WHERE r.prompt = s.prompt AND "
                    f"r.policy = s.{side}_policy AND r.sample_index = s.{side}_sample AND r.round = s.{side}_round) "
                    f"AND NOT EXISTS (SELECT 1 FROM rollouts ro JOIN prompts p ON p.id = ro.prompt_id "
                    f"JOIN policies po ON po.id = ro.policy_id WHERE p.external_id = s.prompt AND "
                    f"po.name = s.{side}_policy AND ro.sample_index = s.{side}_sample AND ro.round = s.{side}_round) "
                    "LIMIT 3",
                    f"field {side}: judgment of unknown response {{1}}",
                    "add the response line (prompt, policy, sample_index) or import it first",
                )
            )
        for sql, problem, fix in checks:
            rows = self._first(s, sql)
            if rows:
                r = rows[0]
                raise InvalidInput(f"{st.path}:{r[0]}: {problem.format(*r)}; {fix}")
        ref = {sha: line for sha, line in st.referenced.items() if sha not in st.staged}
        if ref:
            known = set(s.scalars(text("SELECT sha256 FROM blobs WHERE sha256 = ANY(:s)"), {"s": list(ref)}).all())
            missing = sorted((line, sha) for sha, line in ref.items() if sha not in known)
            if missing:
                line, sha = missing[0]
                raise InvalidInput(
                    f"{st.path}:{line}: field audio_sha256: audio {sha} is not in the store; give the file by path "
                    "instead, or fetch it first (`earmark dataset fetch-audio`)"
                )

    def _conflicts(self, s: Session, st: _Stager, on_conflict: str, summary: ImportSummary) -> None:
        """Count changed/identical rows per kind; with on_conflict=error refuse changed ones."""
        t = st.tables
        changed_sql = {
            "persona": (
                f"FROM {t['persona']} s JOIN personas p ON p.name = s.name",
                "p.card IS DISTINCT FROM s.card",
                "s.name",
            ),
            "prompt": (
                f"FROM {t['prompt']} s JOIN prompts p ON p.external_id = s.external_id "
                "LEFT JOIN personas pe ON pe.name = s.persona",
                PROMPT_CHANGED,
                "s.external_id",
            ),
            "response": (
                f"FROM {t['response']} s JOIN prompts p ON p.external_id = s.prompt JOIN {LATEST_POLICY} po ON "
                "po.name = s.policy JOIN rollouts ro ON ro.prompt_id = p.id AND ro.policy_id = po.id AND "
                "ro.sample_index = s.sample_index AND ro.round = s.round",
                RESPONSE_CHANGED,
                "s.prompt || ' ' || s.policy || ' sample ' || s.sample_index",
            ),
            "judgment": (
                f"FROM {t['judgment']} s JOIN external_judgments e ON e.source = s.source AND "
                "e.external_id = s.external_id",
                "e.content_sha256 <> s.content_sha256",
                "s.source || ' ' || s.external_id",
            ),
        }
        for kind, (frm, cond, key) in changed_sql.items():
            n_changed, n_same = s.execute(
                text(f"SELECT count(*) FILTER (WHERE {cond}), count(*) FILTER (WHERE NOT ({cond})) {frm}")
            ).one()
            summary.unchanged[kind] = n_same
            if n_changed and on_conflict == "error":
                rows = self._first(s, f"SELECT s.line, {key} {frm} WHERE {cond} ORDER BY s.line LIMIT 3")
                shown = "; ".join(f"line {ln}: {k}" for ln, k in rows)
                raise Conflict(
                    f"{st.path}: {n_changed} {kind}(s) differ from the stored ones ({shown}); nothing was imported. "
                    "Rerun with --on-conflict update to replace them, or --on-conflict skip to keep the stored ones"
                )
            if on_conflict == "skip":
                summary.skipped[kind] = n_changed
            else:
                summary.updated[kind] = n_changed

    def _apply(self, s: Session, st: _Stager, on_conflict: str, summary: ImportSummary, uris: dict[str, str]) -> None:
        t = st.tables
        if st.staged:
            s.execute(
                text(
                    "INSERT INTO blobs (sha256, uri, bytes, mime, sample_rate, channels, duration_s) "
                    "SELECT * FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(sha256 text, uri text, bytes bigint, "
                    "mime text, sample_rate int, channels int, duration_s float8) ON CONFLICT (sha256) DO NOTHING"
                ),
                {"rows": json.dumps([{**r, "uri": uris[r["sha256"]]} for r in st.staged.values()])},
            )
        upd = on_conflict == "update"
        # personas
        summary.added["persona"] = s.execute(
            text(
                f"INSERT INTO personas (name, card) SELECT name, card FROM {t['persona']} ON CONFLICT (name) DO NOTHING"
            )
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult
        if upd:
            s.execute(
                text(
                    f"UPDATE personas p SET card = s.card FROM {t['persona']} s WHERE p.name = s.name "
                    "AND p.card IS DISTINCT FROM s.card"
                )
            )
        # prompts
        summary.added["prompt"] = s.execute(
            text(
                "INSERT INTO prompts (external_id, regime, messages, audio_sha256, reference, tools, persona_id, split, "
                "tags) SELECT s.external_id, s.regime, s.messages, s.audio_sha256, s.reference, s.tools, pe.id, s.split, "
                f"s.tags FROM {t['prompt']} s LEFT JOIN personas pe ON pe.name = s.persona "
                "ON CONFLICT (external_id) DO NOTHING"
            )
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult
        if upd:
            s.execute(
                text(
                    "UPDATE prompts p SET regime = s.regime, messages = s.messages, audio_sha256 = s.audio_sha256, "
                    "reference = s.reference, tools = s.tools, split = s.split, tags = s.tags, persona_id = pe.id "
                    f"FROM {t['prompt']} s LEFT JOIN personas pe ON pe.name = s.persona WHERE p.external_id = "
                    f"s.external_id AND {PROMPT_CHANGED}"
                )
            )
        # outside models -> external policies (version 0), then responses -> rollouts
        summary.policies_added = s.execute(
            text(
                "INSERT INTO policies (name, version, kind, uri, config) SELECT DISTINCT s.policy, 0, 'external', "
                "'external:' || s.policy, jsonb_build_object('source', CAST(:src AS text)) "
                f"FROM (SELECT policy FROM {t['response']} UNION SELECT a_policy FROM {t['judgment']} UNION "
                f"SELECT b_policy FROM {t['judgment']}) s(policy) WHERE NOT EXISTS (SELECT 1 FROM policies p "
                "WHERE p.name = s.policy)"
            ),
            {"src": st.source},
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult
        pol = LATEST_POLICY
        summary.added["response"] = s.execute(
            text(
                "INSERT INTO rollouts (prompt_id, policy_id, round, sample_index, messages, text, token_ids, "
                "audio_sha256, sampling, tool_calls) SELECT p.id, po.id, s.round, s.sample_index, "
                "COALESCE(s.messages, p.messages || jsonb_build_array(jsonb_build_object('role', 'assistant', "
                "'content', s.text))), s.text, '{}', s.audio_sha256, jsonb_build_object('source', CAST(:src AS text)), "
                f"s.tool_calls FROM {t['response']} s JOIN prompts p ON p.external_id = s.prompt JOIN {pol} po ON "
                "po.name = s.policy ON CONFLICT (prompt_id, policy_id, sample_index, round) DO NOTHING"
            ),
            {"src": st.source},
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult
        if upd:
            s.execute(
                text(
                    "UPDATE rollouts ro SET text = s.text, audio_sha256 = s.audio_sha256, tool_calls = s.tool_calls, "
                    "messages = COALESCE(s.messages, p.messages || jsonb_build_array(jsonb_build_object('role', "
                    f"'assistant', 'content', s.text))) FROM {t['response']} s JOIN prompts p ON p.external_id = s.prompt "
                    f"JOIN {pol} po ON po.name = s.policy WHERE ro.prompt_id = p.id AND ro.policy_id = po.id AND "
                    f"ro.sample_index = s.sample_index AND ro.round = s.round AND {RESPONSE_CHANGED}"
                )
            )
        ro = (
            f"JOIN {pol} pa ON pa.name = s.a_policy JOIN rollouts ra ON ra.prompt_id = p.id AND ra.policy_id = pa.id "
            "AND ra.sample_index = s.a_sample AND ra.round = s.a_round "
            f"JOIN {pol} pb ON pb.name = s.b_policy JOIN rollouts rb ON rb.prompt_id = p.id AND "
            "rb.policy_id = pb.id AND rb.sample_index = s.b_sample AND rb.round = s.b_round"
        )
        summary.added["judgment"] = s.execute(
            text(
                "INSERT INTO external_judgments (source, external_id, annotator, prompt_id, rollout_a_id, rollout_b_id, "
                "dimension, preference, tie, both_bad, confidence, comment, details, content_sha256) "
                "SELECT s.source, s.external_id, s.annotator, p.id, ra.id, rb.id, s.dimension, s.preference, s.tie, "
                f"s.both_bad, s.confidence, s.comment, s.details, s.content_sha256 FROM {t['judgment']} s "
                f"JOIN prompts p ON p.external_id = s.prompt {ro} ON CONFLICT (source, external_id) DO NOTHING"
            )
        ).rowcount  # type: ignore[attr-defined]  # a CursorResult
        if upd:
            s.execute(
                text(
                    "UPDATE external_judgments e SET annotator = s.annotator, prompt_id = p.id, rollout_a_id = ra.id, "
                    "rollout_b_id = rb.id, dimension = s.dimension, preference = s.preference, tie = s.tie, "
                    "both_bad = s.both_bad, confidence = s.confidence, comment = s.comment, details = s.details, "
                    f"content_sha256 = s.content_sha256 FROM {t['judgment']} s JOIN prompts p ON p.external_id = s.prompt "
                    f"{ro} WHERE e.source = s.source AND e.external_id = s.external_id AND "
                    "e.content_sha256 <> s.content_sha256"
                )
            )
        for k in ("persona", "prompt", "response", "judgment"):
            if on_conflict == "error":
                summary.updated.pop(k, None)


def formats() -> dict[str, str]:
    return {name: a.description for name, a in ADAPTERS.items()}


__all__ = ["ON_CONFLICT", "ImportSummary", "InterchangeService", "formats"]


def _audio_part_paths(messages: list[dict[str, Any]], to_path: Callable[[str], str]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, list):
            c = [
                {k: v for k, v in {**p, "path": to_path(p["audio_sha256"])}.items() if k != "audio_sha256"}
                if isinstance(p, dict) and p.get("type") == "audio" and p.get("audio_sha256")
                else p
                for p in c
            ]
        out.append({**m, "content": c})
    return out


class SnapshotExport(Service):
    """A snapshot as earmark JSONL: personas, prompts, responses and judgments (importable anywhere)."""

    @action("data.read")
    def lines(
        self, rows: list[dict[str, Any]], source: str, to_path: Callable[[str], str] | None = None
    ) -> list[dict[str, Any]]:
        """``to_path`` (sha -> relative file path) replaces sha references by files copied beside the export,
        so the file imports into a store that lacks the blobs."""
        from sqlalchemy import select

        from earmark.store.models import Persona, Policy, Prompt, Rollout

        rids = {i for r in rows for i in (r["chosen_rollout_id"], r["rejected_rollout_id"])}
        pids = {r["prompt_id"] for r in rows}

        def read(s: Session) -> tuple[dict[int, Any], dict[int, Any], dict[int, Any]]:
            ros = {
                ro.id: (ro, name)
                for ro, name in s.execute(
                    select(Rollout, Policy.name)
                    .join(Policy, Policy.id == Rollout.policy_id)
                    .where(Rollout.id.in_(rids))
                ).all()
            }
            prompts = {p.id: p for p in s.scalars(select(Prompt).where(Prompt.id.in_(pids)))}
            personas = {
                p.id: p
                for p in s.scalars(select(Persona).where(Persona.id.in_({p.persona_id for p in prompts.values()})))
            }
            return ros, prompts, personas

        ros, prompts, personas = self.ctx.tx(read)

        def msgs(m: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return _audio_part_paths(m, to_path) if to_path else m

        def audio(sha: str | None) -> dict[str, Any] | None:
            if sha is None:
                return None
            return {"type": "audio", "path": to_path(sha)} if to_path else {"type": "audio", "audio_sha256": sha}

        out: list[dict[str, Any]] = []
        for pe in sorted(personas.values(), key=lambda p: p.name):
            out.append({"kind": "persona", "name": pe.name, **pe.card})
        for p in sorted(prompts.values(), key=lambda p: p.id):
            rec = {
                "kind": "prompt",
                "external_id": p.external_id,
                "regime": p.regime,
                "messages": msgs(p.messages),
                "reference": p.reference,
                "tools": p.tools,
                "persona": personas[p.persona_id].name if p.persona_id else None,
                "split": p.split,
                "tags": p.tags,
            }
            out.append({k: v for k, v in rec.items() if v is not None})
        seen: set[int] = set()
        for rid in sorted(rids):
            ro, name = ros[rid]
            seen.add(rid)
            rec = {
                "kind": "response",
                "prompt": prompts[ro.prompt_id].external_id,
                "policy": name,
                "sample_index": ro.sample_index,
                "round": ro.round,
                "text": ro.text,
                "audio": audio(ro.audio_sha256),
                "tool_calls": ro.tool_calls,
                "messages": msgs(ro.messages) if ro.messages else None,
            }
            out.append({k: v for k, v in rec.items() if v is not None})
        for r in rows:
            a, b = ros[r["chosen_rollout_id"]], ros[r["rejected_rollout_id"]]
            out.append(
                {
                    "kind": "judgment",
                    "external_id": r["row_id"].replace(">", "-over-"),
                    "source": source,
                    "annotator": f"earmark-{r['label_source']}",
                    "prompt": prompts[r["prompt_id"]].external_id,
                    "a": {"policy": a[1], "sample_index": a[0].sample_index, "round": a[0].round},
                    "b": {"policy": b[1], "sample_index": b[0].sample_index, "round": b[0].round},
                    "preference": 1.0,
                    "confidence": r.get("margin"),
                    "details": {
                        "label_source": r["label_source"],
                        "weight": r.get("weight"),
                        "votes": r.get("votes"),
                        "comparison_id": r.get("comparison_id"),
                    },
                }
            )
        return out


# ---- vectorised export of preference pairs (external judgments) ---------------------------------------
PAIR_COLUMNS = [
    ("judgment_id", "int64"),
    ("source", "string"),
    ("external_id", "string"),
    ("annotator", "string"),
    ("prompt_external_id", "string"),
    ("regime", "string"),
    ("prompt_messages", "string"),  # the prompt's chat messages as JSON (audio parts by sha256)
    ("chosen", "string"),
    ("rejected", "string"),
    ("prompt_audio_sha256", "string"),
    ("chosen_audio_sha256", "string"),
    ("rejected_audio_sha256", "string"),
    ("chosen_policy", "string"),
    ("rejected_policy", "string"),
    ("preference", "float64"),
    ("tie", "bool_"),
    ("both_bad", "bool_"),
    ("confidence", "float64"),
]
# The pairs stream carries ids and numbers only; prompts and responses are fetched once each and joined
# in Arrow (many pairs share a prompt or a response, and jsonb -> text per pair was most of the cost).
PAIRS_SQL = """
SELECT e.id, e.source, e.external_id, e.annotator, e.prompt_id, e.rollout_a_id, e.rollout_b_id,
       e.preference, e.tie, e.both_bad, e.confidence
FROM external_judgments e {where}
"""
PAIR_STREAM = [
    ("judgment_id", "int64"),
    ("source", "string"),
    ("external_id", "string"),
    ("annotator", "string"),
    ("prompt_id", "int64"),
    ("a", "int64"),
    ("b", "int64"),
    ("preference", "float64"),
    ("tie", "bool_"),
    ("both_bad", "bool_"),
    ("confidence", "float64"),
]
PROMPTS_SQL = """
SELECT p.id, p.external_id, p.regime, p.messages::text, p.audio_sha256 FROM prompts p
WHERE p.id IN (SELECT prompt_id FROM external_judgments e {where})
"""
PROMPT_STREAM = [
    ("id", "int64"),
    ("external_id", "string"),
    ("regime", "string"),
    ("messages", "string"),
    ("audio_sha256", "string"),
]
RESPONSES_SQL = """
SELECT r.id, r.text, r.audio_sha256, po.name FROM rollouts r JOIN policies po ON po.id = r.policy_id
WHERE r.id IN (SELECT rollout_a_id FROM external_judgments e {where}
               UNION SELECT rollout_b_id FROM external_judgments e {where})
"""
RESPONSE_STREAM = [("id", "int64"), ("text", "string"), ("audio_sha256", "string"), ("policy", "string")]


class _CopyOut:
    """A read-only file over ``COPY (query) TO STDOUT`` on a psycopg connection (what pyarrow.csv reads).

    PostgreSQL sends one CopyData message per row. psycopg's ``Copy`` iterator spends ~3 us of Python
    per message (generator and wait machinery: 3 CPU-s per million pairs, more than PostgreSQL takes
    to produce them); this reads the messages with libpq's non-blocking ``PQgetCopyData`` in a tight
    loop and waits on the socket (GIL released) only when nothing is buffered. The connection must be
    idle (or idle in a transaction); on an early close the COPY is cancelled and drained, so the
    connection can be used (rolled back) afterwards."""

    def __init__(self, raw: Any, sql: str) -> None:
        import selectors

        from psycopg import pq

        self.raw = raw
        self.pg = raw.pgconn
        self.pq = pq
        self.rest = b""
        self.done = False
        self.closed = False
        self.pg.send_query(sql.encode())
        res = self.pg.get_result()
        if res is None or res.status != pq.ExecStatus.COPY_OUT:
            self._finish(res)
            raise InvalidInput("the export query did not start a COPY")  # pragma: no cover - _finish raised
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.pg.socket, selectors.EVENT_READ)

    def _finish(self, res: Any) -> None:
        """Collect the remaining results; raise the server's error, if any."""
        import psycopg.errors

        error = None
        while res is not None:
            if res.status not in (self.pq.ExecStatus.COMMAND_OK, self.pq.ExecStatus.COPY_OUT) and error is None:
                error = psycopg.errors.error_from_result(res, encoding=self.raw.info.encoding)
            res = self.pg.get_result()
        self.done = True
        if error is not None:
            raise error

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        parts, size = [self.rest], len(self.rest)
        get = self.pg.get_copy_data
        while not self.done and (n < 0 or size < n):
            nbytes, data = get(1)
            if nbytes > 0:
                parts.append(bytes(data))
                size += nbytes
            elif nbytes == 0:  # nothing buffered: wait for the socket, then let libpq read it
                self.sel.select()
                self.pg.consume_input()
            else:
                self._finish(self.pg.get_result())
        data = b"".join(parts)
        if 0 <= n < len(data):
            data, self.rest = data[:n], data[n:]
        else:
            self.rest = b""
        return data

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sel.close()
        if not self.done:  # stopped early: cancel the query and drain what is in flight
            import psycopg.errors

            try:
                self.raw.cancel_safe()
                while self.pg.get_copy_data(0)[0] >= 0:
                    pass
                try:
                    self._finish(self.pg.get_result())
                except psycopg.errors.QueryCanceled:
                    pass  # what the cancel does; the caller rolls the transaction back
            except Exception:  # noqa: BLE001 - a connection that cannot be drained is closed (the pool drops it)
                self.raw.close()


def _csv_batches(raw: Any, sql: str, columns: list[tuple[str, str]], block_bytes: int) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    schema = pa.schema([(n, getattr(pa, t)()) for n, t in columns])
    stream = _CopyOut(raw, f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)")
    try:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(column_names=[n for n, _ in columns], block_size=block_bytes),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=pcsv.ConvertOptions(
                column_types=schema,
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        yield from reader
    finally:
        stream.close()


# joined column -> (lookup table, its column)
JOINED_FROM = {
    "prompt_external_id": ("prompts", "external_id"),
    "regime": ("prompts", "regime"),
    "prompt_messages": ("prompts", "messages"),
    "prompt_audio_sha256": ("prompts", "audio_sha256"),
    "chosen": ("responses", "text"),
    "rejected": ("responses", "text"),
    "chosen_audio_sha256": ("responses", "audio_sha256"),
    "rejected_audio_sha256": ("responses", "audio_sha256"),
    "chosen_policy": ("responses", "policy"),
    "rejected_policy": ("responses", "policy"),
}
MAX_PARQUET_DICTIONARY = 4096


def _repeatable_read(raw: Any, snapshot: str | None = None) -> str | None:
    """Start a read-only REPEATABLE READ transaction on a psycopg connection; without ``snapshot``
    export its snapshot (returned), with one adopt it, so several connections read the same data."""
    raw.rollback()  # whatever the pool's ping left open: SET TRANSACTION must come first
    raw.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    if snapshot is not None:
        raw.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        return None
    row = raw.execute("SELECT pg_export_snapshot()").fetchone()
    return str(row[0])


def _lookup_arrays(engine: Any, snapshot: str, sql: str, columns: list[tuple[str, str]], block_bytes: int) -> Any:
    """One lookup table (prompts or responses) read on its own connection in the exported snapshot;
    string columns dictionary-encoded once."""
    import pyarrow as pa

    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        _repeatable_read(raw, snapshot)
        t = pa.Table.from_batches(
            list(_csv_batches(raw, sql, columns, block_bytes)),
            schema=pa.schema([(n, getattr(pa, ty)()) for n, ty in columns]),
        )
        raw.rollback()
    return {
        n: t.column(n).combine_chunks().dictionary_encode() if ty == "string" else t.column(n).combine_chunks()
        for n, ty in columns
    }


def export_pairs_parquet(
    ctx: Any, out: Path, *, source: str | None = None, block_bytes: int = 8 << 20, max_pending: int = 8
) -> int:
    """Write external judgments as preference pairs (chosen = the preferred side; ties keep A first and
    ``tie`` true) to Parquet with sha256 audio references. Returns rows written.

    Vectorised and overlapped: PostgreSQL streams CSV (COPY ... TO STDOUT) that pyarrow parses in
    ``block_bytes`` blocks. Three connections read one exported snapshot (REPEATABLE READ) at once:
    the pairs stream (ids and numbers) on this thread, the referenced prompts and responses on two
    worker threads into Arrow lookup tables. Each block of pairs is joined to them with ``take``,
    chosen/rejected picked with ``if_else``, and handed to a writer thread (ParquetWriter, zstd).
    Memory: the distinct prompts and responses the pairs reference, plus at most ``max_pending``
    blocks of pairs read before the lookups are done and two blocks being written, whatever the
    number of pairs."""
    from concurrent.futures import Future, ThreadPoolExecutor
    from contextlib import ExitStack

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from psycopg import sql as psql

    # Columns taken from prompts/responses are dictionary-encoded once per distinct value: each block
    # then carries int32 indices, and Parquet writes them without hashing the strings again.
    schema = pa.schema(
        [(n, pa.dictionary(pa.int32(), pa.string()) if n in JOINED_FROM else getattr(pa, t)()) for n, t in PAIR_COLUMNS]
    )

    def join(b: Any, prompts: dict[str, Any], resp: dict[str, Any]) -> Any:
        pi = pc.index_in(b.column("prompt_id"), value_set=prompts["id"])
        ai = pc.index_in(b.column("a"), value_set=resp["id"])
        bi = pc.index_in(b.column("b"), value_set=resp["id"])
        a_first = pc.greater_equal(b.column("preference"), 0)
        ci, ri = pc.if_else(a_first, ai, bi), pc.if_else(a_first, bi, ai)
        cols = {
            "judgment_id": b.column("judgment_id"),
            "source": b.column("source"),
            "external_id": b.column("external_id"),
            "annotator": b.column("annotator"),
            "prompt_external_id": prompts["external_id"].take(pi),
            "regime": prompts["regime"].take(pi),
            "prompt_messages": prompts["messages"].take(pi),
            "chosen": resp["text"].take(ci),
            "rejected": resp["text"].take(ri),
            "prompt_audio_sha256": prompts["audio_sha256"].take(pi),
            "chosen_audio_sha256": resp["audio_sha256"].take(ci),
            "rejected_audio_sha256": resp["audio_sha256"].take(ri),
            "chosen_policy": resp["policy"].take(ci),
            "rejected_policy": resp["policy"].take(ri),
            "preference": pc.abs(b.column("preference")),
            "tie": b.column("tie"),
            "both_bad": b.column("both_bad"),
            "confidence": b.column("confidence"),
        }
        return pa.RecordBatch.from_arrays([cols[f.name] for f in schema], schema=schema)

    rows = 0
    with ctx.engine.connect() as conn, ThreadPoolExecutor(2, thread_name_prefix="export-lookup") as lookups:
        raw = conn.connection.driver_connection
        snapshot = _repeatable_read(raw)
        assert snapshot is not None
        where = psql.SQL("WHERE e.source = {}").format(psql.Literal(source)).as_string(raw) if source else ""
        prompts_f = lookups.submit(
            _lookup_arrays, ctx.engine, snapshot, PROMPTS_SQL.format(where=where), PROMPT_STREAM, block_bytes
        )
        resp_f = lookups.submit(
            _lookup_arrays, ctx.engine, snapshot, RESPONSES_SQL.format(where=where), RESPONSE_STREAM, block_bytes
        )
        with ExitStack() as stack:
            writer = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="export-write"))
            writes: list[Future[None]] = []
            pending: list[Any] = []
            files: list[Any] = []

            def parquet(prompts: dict[str, Any], resp: dict[str, Any]) -> Any:
                # Parquet dictionary pages only for columns with few distinct values: a prompt-sized
                # dictionary repeated in every row group costs more time and bytes than plain pages.
                small = ["source", "annotator"] + [
                    name
                    for name, (table, col) in JOINED_FROM.items()
                    if len((prompts if table == "prompts" else resp)[col].dictionary) <= MAX_PARQUET_DICTIONARY
                ]
                return stack.enter_context(pq.ParquetWriter(out, schema, compression="zstd", use_dictionary=small))

            def drain() -> None:
                nonlocal rows
                prompts, resp = prompts_f.result(), resp_f.result()
                if not files:
                    files.append(parquet(prompts, resp))
                for b in pending:
                    batch = join(b, prompts, resp)
                    rows += batch.num_rows
                    writes.append(writer.submit(files[0].write_batch, batch))
                    if len(writes) > 2:  # at most two batches queued for the writer
                        writes.pop(0).result()
                pending.clear()

            try:
                for b in _csv_batches(raw, PAIRS_SQL.format(where=where), PAIR_STREAM, block_bytes):
                    pending.append(b)
                    if len(pending) >= max_pending or (prompts_f.done() and resp_f.done()):
                        drain()
                drain()
            finally:
                for f in writes:
                    f.result()
        raw.rollback()
    return rows
