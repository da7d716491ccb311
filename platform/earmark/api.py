"""The notebook-facing entry point: ``earmark.connect()`` returns services bound to one store.

import earmark
em = earmark.connect()                 # embedded PostgreSQL + local blobs under ./.earmark
em.catalog.import_prompts(Path("prompts.jsonl"))
em.rollouts.count()
"""

from __future__ import annotations

from functools import cached_property

from pydantic import SecretStr

from earmark.blobs import open_blob_store
from earmark.config import Settings, get_settings
from earmark.errors import SchemaBehind
from earmark.security import SYSTEM, Principal
from earmark.services.blob_service import BlobService
from earmark.services.campaigns import CampaignService
from earmark.services.catalog import CatalogService
from earmark.services.context import ServiceContext
from earmark.services.datasets import DatasetService
from earmark.services.drift import DriftService
from earmark.services.interchange import InterchangeService
from earmark.services.labels import LabelService
from earmark.services.quality import QualityService
from earmark.services.rating import RatingService
from earmark.services.review import ReviewService
from earmark.services.rollouts import RolloutService
from earmark.services.scores import ScoreService
from earmark.services.tasks import TaskService
from earmark.services.timelines import TimelineService
from earmark.services.users import UserService
from earmark.store import migrate
from earmark.store.engine import make_engine, make_session_factory, resolve_database_url


class Earmark:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def worker_settings(self) -> Settings:
        """Settings for worker processes (Ray actors): the same store this process resolved, so a
        worker reaches the embedded server's socket instead of resolving (or starting) its own."""
        url = self.ctx.engine.url.render_as_string(hide_password=False)
        return self.settings.model_copy(update={"database_url": SecretStr(url)})

    def require(self, action: str) -> None:
        """Raise PermissionDenied unless this client's principal may perform ``action``."""
        self.ctx.require(action)

    @cached_property
    def catalog(self) -> CatalogService:
        return CatalogService(self.ctx)

    @cached_property
    def blobs(self) -> BlobService:
        return BlobService(self.ctx)

    @cached_property
    def rollouts(self) -> RolloutService:
        return RolloutService(self.ctx)

    @cached_property
    def scores(self) -> ScoreService:
        return ScoreService(self.ctx)

    @cached_property
    def users(self) -> UserService:
        return UserService(self.ctx)

    @cached_property
    def campaigns(self) -> CampaignService:
        return CampaignService(self.ctx)

    @cached_property
    def tasks(self) -> TaskService:
        return TaskService(self.ctx)

    @cached_property
    def rating(self) -> RatingService:
        return RatingService(self.ctx)

    @cached_property
    def review(self) -> ReviewService:
        return ReviewService(self.ctx)

    @cached_property
    def quality(self) -> QualityService:
        return QualityService(self.ctx)

    @cached_property
    def labels(self) -> LabelService:
        return LabelService(self.ctx)

    @cached_property
    def datasets(self) -> DatasetService:
        return DatasetService(self.ctx)

    @cached_property
    def drift(self) -> DriftService:
        return DriftService(self.ctx)

    @cached_property
    def interchange(self) -> InterchangeService:
        return InterchangeService(self.ctx)

    @cached_property
    def timelines(self) -> TimelineService:
        return TimelineService(self.ctx)

    def as_principal(self, principal: Principal) -> Earmark:
        return Earmark(self.ctx.as_principal(principal))

    def session(self):  # noqa: ANN201 - a plain Session for ad-hoc reads in notebooks
        return self.ctx.sessions()

    def close(self) -> None:
        self.ctx.engine.dispose()

    def __enter__(self) -> Earmark:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    settings: Settings | None = None,
    *,
    principal: Principal = SYSTEM,
    upgrade: bool | None = None,
    pool_size: int = 5,
) -> Earmark:
    """Open the configured store (starting the embedded one if needed).

    Migrations: ``upgrade=None`` follows EARMARK_AUTO_MIGRATE (default: on for the embedded store,
    off for an external database); True migrates to head; False never migrates and never checks
    (Ray actors, whose driver already did)."""
    settings = settings or get_settings()
    engine = make_engine(resolve_database_url(settings), pool_size=pool_size)
    if upgrade is not False:
        cur, head = migrate.current(engine), migrate.heads()
        if cur not in head:
            if upgrade or settings.migrates_on_connect():
                migrate.upgrade(engine)
            else:
                engine.dispose()
                raise SchemaBehind(
                    f"the store's schema is at revision {cur or 'none (an empty database)'} but this "
                    f"earmark needs {', '.join(head)}; run `earmark db upgrade` (or set EARMARK_AUTO_MIGRATE=1 "
                    "to migrate on connect)"
                )
    blobs = open_blob_store(
        settings.resolved_blob_url(), endpoint_url=settings.s3_endpoint_url, region=settings.s3_region
    )
    ctx = ServiceContext(
        settings=settings, engine=engine, sessions=make_session_factory(engine), blobs=blobs, principal=principal
    )
    return Earmark(ctx)
