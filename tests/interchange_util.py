"""Helpers for the interchange tests: row counts and blob files, to show a refusal changed nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

from sqlalchemy import text

DATA = Path(__file__).parent / "data" / "interchange"
TABLES = ("personas", "prompts", "policies", "rollouts", "blobs", "external_judgments", "judgments")


def counts(em) -> dict[str, int]:  # noqa: ANN001
    with em.session() as s:
        return {t: s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


def blob_files(em) -> set[str]:  # noqa: ANN001
    return set(em.ctx.blobs.iter_digests())


def state(em) -> tuple[dict[str, int], set[str]]:  # noqa: ANN001
    return counts(em), blob_files(em)


def copy_data(dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copy(DATA / n, dest / n)
    return dest
