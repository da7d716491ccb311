"""Alembic: one head, models and migrations agree, downgrade/upgrade round-trips with data present."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from conftest import fresh_database
from sqlalchemy import inspect, text

from earmark.store import migrate
from earmark.store.engine import make_engine
from earmark.store.models import Base


def test_single_head() -> None:
    assert len(migrate.heads()) == 1


def test_round_trip_with_data_and_no_drift() -> None:
    url, drop = fresh_database("earmark_mig")
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO personas (name, card) VALUES ('p', '{}')"))
            conn.execute(
                text(
                    "INSERT INTO prompts (external_id, regime, messages, split, tags, persona_id) "
                    "SELECT 'x', 'asr', '[]', 'train', '[]', id FROM personas"
                )
            )
            conn.execute(
                text("INSERT INTO policies (name, version, kind, uri, config) VALUES ('pol', 0, 'offline', 'u', '{}')")
            )
            conn.execute(
                text(
                    "INSERT INTO rollouts (prompt_id, policy_id, round, sample_index, messages, text, token_ids, sampling) "
                    "SELECT pr.id, po.id, 0, 0, '[]', 'hello', '{1,2}', '{}' FROM prompts pr, policies po"
                )
            )
        # Step down one revision at a time to base, then all the way back up, with rows present.
        revisions = []
        while (cur := migrate.current(engine)) is not None:
            revisions.append(cur)
            migrate.downgrade(engine, "-1")
        assert "rollouts" not in inspect(engine).get_table_names()
        migrate.upgrade(engine)
        assert migrate.current(engine) == migrate.heads()[0] == revisions[0]
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations disagree: {diff}"
    finally:
        engine.dispose()
        drop()


def test_downgrade_one_step_keeps_older_tables_data() -> None:
    """With more than one revision, stepping back one keeps the data of the tables it does not own."""
    if len(list(_chain())) < 2:
        return
    url, drop = fresh_database("earmark_mig1")
    engine = make_engine(url)
    try:
        migrate.upgrade(engine)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO personas (name, card) VALUES ('keep', '{\"a\": 1}')"))
        migrate.downgrade(engine, "-1")
        migrate.upgrade(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT card->>'a' FROM personas WHERE name='keep'")).scalar() == "1"
    finally:
        engine.dispose()
        drop()


def _chain():
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config()).walk_revisions()
