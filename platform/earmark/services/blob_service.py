"""Audio and file blobs: validate, write the bytes, then record the row (in that order)."""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from earmark import audio
from earmark.errors import NotFound
from earmark.security import action
from earmark.services.context import Service
from earmark.store.models import Blob


def record_blob(session: Session, **row: Any) -> None:
    session.execute(insert(Blob).values(**row).on_conflict_do_nothing(index_elements=["sha256"]))


class BlobService(Service):
    @action("catalog.write")
    def put_audio(self, data: bytes) -> Blob:
        """Store a WAV/FLAC clip (validated) and return its row; identical bytes are stored once."""
        info = audio.probe(data)
        stored = self.ctx.blobs.put_bytes(data)  # bytes first: a row never points at a missing blob
        row = dict(
            sha256=stored.sha256,
            uri=stored.uri,
            bytes=stored.bytes,
            mime=info.mime,
            sample_rate=info.sample_rate,
            channels=info.channels,
            duration_s=info.duration_s,
        )
        self.ctx.tx(lambda s: record_blob(s, **row))
        return Blob(**row)

    @action("catalog.write")
    def put_waveform(self, waveform: np.ndarray, sample_rate: int) -> Blob:
        return self.put_audio(audio.to_wav_bytes(waveform, sample_rate))

    @action("catalog.write")
    def put_file(self, data: bytes, mime: str) -> Blob:
        stored = self.ctx.blobs.put_bytes(data)
        row = dict(
            sha256=stored.sha256,
            uri=stored.uri,
            bytes=stored.bytes,
            mime=mime,
            sample_rate=None,
            channels=None,
            duration_s=None,
        )
        self.ctx.tx(lambda s: record_blob(s, **row))
        return Blob(**row)

    @action("data.read")
    def get(self, sha256: str) -> Blob:
        row = self.ctx.tx(lambda s: s.scalar(select(Blob).where(Blob.sha256 == sha256)))
        if row is None:
            raise NotFound(f"no blob {sha256} is recorded in the store; check the id or re-import the audio")
        return row

    @action("catalog.write")
    def sweep_orphans(self, *, grace_s: float = 3600.0, dry_run: bool = False) -> list[str]:
        """Delete stored blobs that no `blobs` row records (a write whose row never committed).

        Bytes are written before rows, so a crash between the two leaves an orphan, never a
        dangling row. Blobs younger than ``grace_s`` are kept: their row may be about to commit.
        """
        self.ctx.require("catalog.write")
        import time

        digests = list(self.ctx.blobs.iter_digests())
        known: set[str] = set()
        for i in range(0, len(digests), 5000):
            chunk = digests[i : i + 5000]
            known |= set(self.ctx.tx(partial(_known_digests, chunk=chunk)))
        cutoff = time.time() - grace_s
        removed = []
        for d in digests:
            if d in known or self.ctx.blobs.modified_at(d) > cutoff:
                continue
            if not dry_run:
                self.ctx.blobs.delete(d)
            removed.append(d)
        if removed and not dry_run:
            self.ctx.tx(lambda s: self.ctx.audit(s, "blobs.sweep", "blob", None, removed=len(removed)))
        return removed

    @action("data.read")
    def read(self, sha256: str) -> bytes:
        self.get(sha256)
        return self.ctx.blobs.get_bytes(sha256)


def _known_digests(s: Session, chunk: list[str]) -> list[str]:
    return list(s.scalars(select(Blob.sha256).where(Blob.sha256.in_(chunk))).all())
