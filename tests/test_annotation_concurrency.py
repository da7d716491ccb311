"""32 concurrent raters on real PostgreSQL: every item ends with exactly k judgments, none twice."""

from __future__ import annotations

import pytest
from annotation_fixtures import make_user, record_judgment_counts, seed_rollouts
from sqlalchemy import text

from earmark.config import Settings
from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.simulate import run_raters

K = 3


@pytest.fixture
def short_lease_em(committed_em):
    # 10 s leases so walked-away tasks come back within the test
    settings = Settings(**{**committed_em.settings.model_dump(), "lease_seconds": 10})
    from earmark.api import Earmark
    from earmark.services.context import ServiceContext

    ctx = committed_em.ctx
    import sqlalchemy

    engine = sqlalchemy.create_engine(ctx.engine.url, pool_size=40, max_overflow=0, pool_pre_ping=True)
    from earmark.store.engine import make_session_factory

    yield Earmark(
        ServiceContext(
            settings=settings,
            engine=engine,
            sessions=make_session_factory(engine),
            blobs=ctx.blobs,
            principal=ctx.principal,
        )
    )
    engine.dispose()


def test_32_raters_with_abandonment(short_lease_em, record_property) -> None:
    em = short_lease_em
    seed_rollouts(em, n_prompts=12, k=3)  # 12 prompts x 3 pairs = 36 items
    camp = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
        CampaignCreate(name="load", overlap=K, gold_ratio=0.0, max_items=36)
    )
    raters = [em.as_principal(make_user(em, f"r{i:02d}")) for i in range(32)]
    stats = run_raters(
        raters, camp.id, p_skip=0.15, p_walk_away=0.05, p_double_submit=0.1, idle_wait_s=0.5, deadline_s=90
    )
    with em.session() as s:
        per_item = s.execute(
            text(
                "SELECT c.id, count(j.id) FROM comparisons c LEFT JOIN judgments j "
                "ON j.comparison_id = c.id WHERE c.campaign_id = :c GROUP BY c.id"
            ),
            {"c": camp.id},
        ).all()
        dup_raters = s.scalar(
            text(
                "SELECT count(*) FROM (SELECT comparison_id, rater_id FROM judgments "
                "GROUP BY 1, 2 HAVING count(*) > 1) d"
            )
        )
        dup_slots = s.scalar(
            text("SELECT count(*) FROM (SELECT task_id FROM judgments GROUP BY 1 HAVING count(*) > 1) d")
        )
        undone = s.scalar(
            text("SELECT count(*) FROM tasks WHERE campaign_id = :c AND status <> 'done'"), {"c": camp.id}
        )
    record_judgment_counts(record_property, [n for _, n in per_item], 36, K, dup_raters + dup_slots)
    assert len(per_item) == 36
    assert all(n == K for _, n in per_item), per_item
    assert dup_raters == 0 and dup_slots == 0 and undone == 0
    assert sum(s.submitted for s in stats) == 36 * K
    assert sum(s.abandoned + s.walked_away for s in stats) > 0  # abandonment really happened
