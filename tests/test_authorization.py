"""Every public service method declares the action it performs (deny by default), and a rater is
refused wherever the action needs more. The enumeration is over the classes themselves, so a
method added without a declaration fails here."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from annotation_fixtures import make_user, seed_rollouts

import earmark.services
from earmark.domain.enums import Role
from earmark.errors import PermissionDenied
from earmark.security import PERMISSIONS, Principal, declared_action
from earmark.services.context import Service, ServiceContext


def service_classes() -> list[type[Service]]:
    out = []
    for info in pkgutil.iter_modules(earmark.services.__path__):
        mod = importlib.import_module(f"earmark.services.{info.name}")
        out += [
            c
            for c in vars(mod).values()
            if inspect.isclass(c) and issubclass(c, Service) and c is not Service and c.__module__ == mod.__name__
        ]
    return sorted(set(out), key=lambda c: c.__name__)


def public_methods() -> list[tuple[str, object]]:
    return [
        (f"{cls.__name__}.{name}", member)
        for cls in service_classes()
        for name, member in vars(cls).items()
        if not name.startswith("_") and inspect.isfunction(member)
    ]


METHODS = public_methods()


def test_enumeration_covers_the_services() -> None:
    names = {c.__name__ for c in service_classes()}
    assert {"CatalogService", "DatasetService", "TaskService", "UserService", "DriftService"} <= names
    assert len(METHODS) > 100


@pytest.mark.parametrize(("name", "method"), METHODS, ids=[n for n, _ in METHODS])
def test_every_public_method_declares_a_known_action(name: str, method: object) -> None:
    act = declared_action(method)
    assert act is not None, f"{name} declares no action; decorate it with @action(...) (earmark.security)"
    assert act in PERMISSIONS


def test_undeclared_method_is_refused(em) -> None:
    class Leaky(Service):
        def everything(self) -> str:
            return "secrets"

    with pytest.raises(PermissionDenied, match="declares no action"):
        Leaky(em.ctx).everything()


RATER_REFUSED = [(n, m) for n, m in METHODS if Role.rater not in PERMISSIONS[declared_action(m) or "users.manage"]]


@pytest.mark.parametrize(("name", "method"), RATER_REFUSED, ids=[n for n, _ in RATER_REFUSED])
def test_rater_is_refused_before_any_work(name: str, method: object, em) -> None:
    """Called as a rater with no arguments at all: the refusal comes before argument handling."""
    rater = em.ctx.as_principal(Principal(123456, "rita", Role.rater))
    cls = next(c for c in service_classes() if c.__name__ == name.split(".")[0])
    with pytest.raises(PermissionDenied, match="rita"):
        method(cls(rater))  # type: ignore[operator]


def test_rater_gets_what_raters_need(em) -> None:
    rater_actions = {a for a, roles in PERMISSIONS.items() if Role.rater in roles}
    assert rater_actions == {"tasks.rate", "campaigns.view", "users.login"}
    rater = em.as_principal(Principal(123456, "rita", Role.rater))
    assert rater.campaigns.list() == []


def test_lineage_hides_rater_names_from_raters_and_reviewers(em) -> None:
    seed_rollouts(em)
    for role in (Role.rater, Role.reviewer):
        p = make_user(em, f"someone-{role.value}", role)
        with pytest.raises(PermissionDenied):
            em.as_principal(p).datasets.lineage(None, 0)  # type: ignore[arg-type]
    assert isinstance(em.ctx, ServiceContext)


def test_progress_shows_rater_names_only_to_the_dashboard(em) -> None:
    import uuid

    from earmark.services.campaigns import CampaignCreate

    seed_rollouts(em)
    camp = em.as_principal(Principal(None, "admin", Role.admin)).campaigns.create(
        CampaignCreate(name="names", overlap=1, gold_ratio=0.0)
    )
    rita = em.as_principal(make_user(em, "rita"))
    le = rita.tasks.claim(camp.id, want=1)[0]
    answer = {"choice": "A", "strength": 2, "ratings": {"prosody": 4, "persona_consistency": 3, "correctness": 5}}
    rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), answer)
    assert rita.campaigns.progress(camp.id).per_rater == {} and rita.campaigns.progress(camp.id).done == 1
    assert em.campaigns.progress(camp.id).per_rater == {"rita": 1}
