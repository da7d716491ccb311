"""The annotation app through Streamlit's AppTest, from the router, against real PostgreSQL.

The app connects through EARMARK_DATABASE_URL exactly as `earmark ui` starts it; seeding goes
through the real services with real tone audio. Playback is reported the way the browser
reports it: by setting the listen tracker component's state (tests/test_ui_browser.py plays
the clips for real in chromium).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import altair  # noqa: F401  # warm imports, so no AppTest run pays for them
import pandas  # noqa: F401
import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import select, text
from streamlit.testing.v1 import AppTest

from annotation_ui import listen
from annotation_ui.rating_form import widget_key
from annotation_ui.session import Login
from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Adjudication, AuditLog, Judgment, Task, User

APP = Path(__file__).resolve().parents[1] / "annotation_ui" / "app.py"
POLICY = "zebra-policy-xq7"  # distinctive, so "never rendered" is a meaningful search
PASSWORD = "correct horse battery"
ADMIN = Principal(None, "bootstrap", Role.admin)


@pytest.fixture
def ui(committed_em, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    cfg = committed_em.settings
    monkeypatch.setenv("EARMARK_DATABASE_URL", cfg.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_BLOB_URL", cfg.blob_url)
    monkeypatch.setenv("EARMARK_HOME", str(cfg.home))
    yield committed_em
    from annotation_ui.session import _client

    _client.clear()  # closes the app's engine before committed_em truncates the tables


def campaign(em, *, overlap: int = 2, gold_ratio: float = 0.0, n_prompts: int = 3, name: str = "voices"):
    seed_rollouts(em, n_prompts=n_prompts, policy=POLICY)
    return em.as_principal(ADMIN).campaigns.create(
        CampaignCreate(
            name=name, overlap=overlap, gold_ratio=gold_ratio, instructions="Listen to both <clips>, then *choose*."
        )
    )


def app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=30).run()


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def login(at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
    at.text_input(key="login-username").input(username)
    at.text_input(key="login-password").input(password)
    return button(at, "Log in").click().run()


def shown(at: AppTest):
    return at.session_state["rate"]["item"]


def report_played(at: AppTest, labels: list[str] | None = None) -> AppTest:
    item = shown(at)
    state = {
        s.label: {"covered_ms": int(s.duration_s * 1000), "played_ms": int(s.duration_s * 1000) + 40, "ended": True}
        for s in item.stimuli
        if labels is None or s.label in labels
    }
    at.session_state[listen.tracker_key(item.task_id)] = {"listened": state}
    return at.run()


def answer(at: AppTest, choice: str, *, rationale: str = "B mumbles the last word") -> AppTest:
    tid = shown(at).task_id
    at.radio(key=widget_key("choice", tid)).set_value(choice)
    if choice in ("A", "B"):  # "how much better" starts blank too
        at.radio(key=widget_key("strength", tid)).set_value(2)
    for dim in RATING_DIMENSIONS:
        at.radio(key=widget_key(f"dim-{dim}", tid)).set_value(4)
    at.text_area(key=widget_key("rationale", tid)).input(rationale)
    return at.button(key=widget_key("submit", tid)).click().run()


def page_text(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("title", "markdown", "caption", "text", "info", "error", "success", "warning")
        for e in getattr(at, kind)
    ]
    parts += [w.label for w in at.radio] + [str(o) for w in at.radio for o in w.options]
    parts += [str(o) for w in at.selectbox for o in w.options]
    return "\n".join(map(str, parts))


def known_pages(at: AppTest) -> str:
    """AppTest refuses a switch to a page the router did not register, listing those it did."""
    with pytest.raises(ValueError, match="Could not find a navigation page") as err:
        at.switch_page("app_pages/login.py")  # registered only while logged out
    return str(err.value)


def test_login_wrong_then_right_password(ui) -> None:
    campaign(ui)
    make_user(ui, "rita")
    at = login(app(), "rita", "not the password")
    assert [e.value for e in at.error] == ["Wrong username or password."]
    assert "auth" not in at.session_state
    at = login(at, "rita")
    assert not at.exception
    assert [t.value for t in at.title] == ["Rate"]
    assert any("Signed in as **rita**" in c.value for c in at.sidebar.caption)


def test_login_throttled_after_repeated_failures(ui, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARMARK_LOGIN_MAX_FAILURES", "2")  # the app reads settings per run
    make_user(ui, "rita")
    at = app()
    for _ in range(2):
        at = login(at, "rita", "wrong password!")
    at = login(at, "rita")  # even the right password waits
    assert "too many failed logins" in at.error[0].value and "auth" not in at.session_state


def test_pages_per_role_and_refusals(ui) -> None:
    campaign(ui)
    for name, role in (("rita", Role.rater), ("rev", Role.reviewer), ("ada", Role.admin)):
        make_user(ui, name, role)
    rater = login(app(), "rita")
    pages = known_pages(rater)
    assert "rate.py" in pages and "review.py" not in pages and "admin.py" not in pages and "dashboard.py" not in pages
    for page in ("app_pages/admin.py", "app_pages/review.py", "app_pages/dashboard.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            rater.switch_page(page)
    reviewer_pages = known_pages(login(app(), "rev"))
    assert (
        all(p in reviewer_pages for p in ("rate.py", "review.py", "dashboard.py")) and "admin.py" not in reviewer_pages
    )
    assert all(p in known_pages(login(app(), "ada")) for p in ("rate.py", "review.py", "dashboard.py", "admin.py"))

    # Defence in depth: each page refuses a session whose role lacks its permission on its own.
    rita = ui.users.find("rita")
    for page, title in (("admin.py", "Admin"), ("review.py", "Review"), ("dashboard.py", "Dashboard")):
        direct = AppTest.from_file(str(APP.parent / "app_pages" / page), default_timeout=30)
        direct.session_state["auth"] = Login(Principal(rita.id, "rita", Role.rater), time.time(), "password")
        direct.run()
        assert [e.value for e in direct.error] == ["Your role (rater) may not open this page."]
        assert title not in [t.value for t in direct.title]
    anonymous = AppTest.from_file(str(APP.parent / "app_pages" / "admin.py"), default_timeout=30).run()
    assert [e.value for e in anonymous.error] == ["Log in first."]


def test_full_rating_is_stored_in_postgres(ui) -> None:
    camp = campaign(ui)
    rita = make_user(ui, "rita")
    at = login(app(), "rita")
    item = shown(at)
    tid = item.task_id
    submit = at.button(key=widget_key("submit", tid))
    assert submit.disabled, "submit must wait until every clip was played"
    sub_id = at.session_state["rate"]["submission_id"]
    at = report_played(at, ["A"])
    assert at.button(key=widget_key("submit", tid)).disabled
    at = report_played(at)
    assert not at.button(key=widget_key("submit", tid)).disabled
    assert at.session_state["rate"]["submission_id"] == sub_id, "a rerun keeps the submission id"

    text_shown = page_text(at)
    assert POLICY not in text_shown and "file:///ckpt" not in text_shown
    assert r"Listen to both \<clips\>, then \*choose\*\." in text_shown  # user text escaped, not rendered

    at = answer(at, "B")
    assert not at.exception and not at.error
    assert [s.value for s in at.success] == [f"Saved your answer to item #{tid}."]
    assert shown(at).task_id != tid
    with ui.session() as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == tid))
        lease_order = s.scalar(select(Task.presentation).where(Task.id == tid))["order"]
        audits = s.scalars(select(AuditLog.action).where(AuditLog.entity == "judgment")).all()
    assert j.rater_id == rita.user_id and j.submission_id == sub_id and j.campaign_id == camp.id
    assert j.choice == ("B" if lease_order[1] == 1 else "A")  # canonical, whatever order was shown
    assert j.ratings == {d: 4 for d in RATING_DIMENSIONS} and j.rationale == "B mumbles the last word"
    assert set(j.listen_ms) == {"A", "B"} and all(v > 0 for v in j.listen_ms.values())
    assert audits == ["judgments.submit"]


@pytest.mark.parametrize("protocol", ["mos", "cmos", "mushra"])
def test_every_protocol_form_submits(ui, protocol: str) -> None:
    seed_rollouts(ui, n_prompts=2, k=3, policy=POLICY)
    ui.as_principal(ADMIN).campaigns.create(
        CampaignCreate(name=f"p-{protocol}", protocol=protocol, overlap=1, gold_ratio=0.0, dimensions=["prosody"])
    )
    make_user(ui, "rita")
    at = report_played(login(app(), "rita"))
    item = shown(at)
    tid, labels = item.task_id, [s.label for s in item.stimuli]
    assert len(labels) == {"mos": 1, "cmos": 2, "mushra": 3}[protocol]
    if protocol == "mos":
        at.radio(key=widget_key("mos-A", tid)).set_value(4)
    elif protocol == "cmos":
        at.radio(key=widget_key("cmos", tid)).set_value(-2)
    else:
        for i, label in enumerate(labels):
            at.slider(key=widget_key(f"mushra-{label}", tid)).set_value(30 * i + 10)
    at.radio(key=widget_key("dim-prosody", tid)).set_value(5)
    at.button(key=widget_key("submit", tid)).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with ui.session() as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == tid))
    assert j.protocol == protocol and j.ratings["prosody"] == 5
    if protocol == "mos":
        assert j.ratings["mos"] == [4]
    elif protocol == "cmos":  # "A better" as shown; canonical sign follows the presentation order
        assert j.ratings["cmos_canonical"] == (-2 if j.presentation["order"][0] == 0 else 2)
    else:  # stored in canonical order
        shown_scores = [10, 40, 70]
        assert sorted(j.ratings["mushra"]) == shown_scores
        assert [j.ratings["mushra"][c] for c in j.presentation["order"]] == shown_scores


def test_missing_answers_are_named_and_nothing_is_stored(ui) -> None:
    campaign(ui)
    make_user(ui, "rita")
    at = report_played(login(app(), "rita"))
    tid = shown(at).task_id
    at.button(key=widget_key("submit", tid)).click().run()
    errors = [e.value for e in at.error]
    assert errors[0] == "Choose which response is better (or a tie, or both bad)."  # next to its question
    assert "Rate prosody (1-5)." in errors and errors[-1] == "4 answer(s) missing: see the messages above."
    assert shown(at).task_id == tid
    with ui.session() as s:
        assert s.scalar(text("SELECT count(*) FROM judgments")) == 0


def test_gold_item_answered_and_scored(ui) -> None:
    campaign(ui, overlap=1, gold_ratio=0.5, n_prompts=2)
    make_user(ui, "rita")
    at = login(app(), "rita")
    answered_gold = None
    for _ in range(6):
        tid = shown(at).task_id
        with ui.session() as s:
            is_gold, order = s.execute(
                text(
                    "SELECT c.is_gold, t.presentation->'order' FROM tasks t JOIN comparisons c ON c.id = t.comparison_id "
                    "WHERE t.id = :t"
                ),
                {"t": tid},
            ).one()
        # the gold answer is canonical A: pick whichever label it was shown under
        at = answer(report_played(at), ("A" if order[0] == 0 else "B") if is_gold else "tie")
        if is_gold:
            answered_gold = tid
            break
    assert answered_gold is not None
    assert "gold" not in page_text(at).lower()  # raters are not told which items were gold
    with ui.session() as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == answered_gold))
    assert j.is_gold and j.gold_correct is True


def test_lost_lease_is_reported_and_the_next_item_loads(ui) -> None:
    campaign(ui)
    make_user(ui, "rita")
    bob = make_user(ui, "bob")
    at = login(app(), "rita")
    tid = shown(at).task_id
    with ui.session() as s, s.begin():  # the lease lapsed and bob took the slot
        s.execute(
            text(
                "UPDATE tasks SET leased_by = :b, lease_token = :t, lease_expires_at = now() + interval '5 min' "
                "WHERE id = :i"
            ),
            {"b": bob.user_id, "t": uuid.uuid4(), "i": tid},
        )
    at = report_played(at)
    assert any("taken by another rater" in e.value for e in at.error)
    assert shown(at).task_id != tid


def test_logout_releases_the_lease_and_session_expiry(ui) -> None:
    campaign(ui)
    make_user(ui, "rita")
    at = login(app(), "rita")
    tid = shown(at).task_id
    at = button(at, "Log out").click().run()
    assert [t.value for t in at.title] == ["earmark"] and "You are logged out." in [i.value for i in at.info]
    with ui.session() as s:
        assert s.scalar(select(Task.status).where(Task.id == tid)) == "open"
        assert s.scalar(text("SELECT count(*) FROM tasks WHERE status = 'leased'")) == 0  # the prepared one too

    at = login(at, "rita")
    auth = at.session_state["auth"]
    at.session_state["auth"] = Login(auth.principal, time.time() - ui.settings.session_ttl_seconds - 1, "password")
    at.run()
    assert [t.value for t in at.title] == ["earmark"]
    assert any("session expired" in i.value for i in at.info)


def _split_votes(em, camp_id: int) -> None:
    """rita always prefers canonical A, bob canonical B: every item is split."""
    for name, canon in (("rita", 0), ("bob", 1)):
        rater = em.as_principal(make_user(em, name))
        while leases := rater.tasks.claim(camp_id, want=1):
            le = leases[0]
            shown_label = "A" if le.order[0] == canon else "B"
            rater.tasks.submit(
                le.task_id,
                le.lease_token,
                uuid.uuid4(),
                {
                    "choice": shown_label,
                    "strength": 2,
                    "rationale": "x",
                    "listen_ms": {"A": 300, "B": 400},
                    "ratings": {d: 3 for d in RATING_DIMENSIONS},
                },
            )


def test_reviewer_adjudicates_a_split_item(ui) -> None:
    camp = campaign(ui, n_prompts=2)
    _split_votes(ui, camp.id)
    rev = make_user(ui, "rev", Role.reviewer)
    at = login(app(), "rev")
    at.switch_page("app_pages/review.py").run()
    assert not at.exception
    cid = at.selectbox(key="review-item").value
    text_shown = page_text(at)
    assert "rita" in text_shown or any("rita" in str(df.value) for df in at.dataframe)
    assert POLICY not in text_shown
    at.radio(key=f"adj-choice-{cid}").set_value("B")
    at.text_area(key=f"adj-note-{cid}").input("B is clearer")
    button(at, "Save decision").click().run()
    assert not at.exception and any("Decision saved" in s.value for s in at.success)
    with ui.session() as s:
        adj = s.scalar(select(Adjudication).where(Adjudication.comparison_id == cid))
        audit = s.scalar(select(AuditLog).where(AuditLog.action == "judgments.adjudicate"))
    assert (adj.choice, adj.reviewer_id, adj.note) == ("B", rev.user_id, "B is clearer")
    assert adj.preference == pytest.approx(-2 / 3) and audit.actor_id == rev.user_id
    at.switch_page("app_pages/dashboard.py").run()
    assert not at.exception and [t.value for t in at.title] == ["Dashboard"]


def test_reviewer_screens_a_low_gold_rater_and_clears_them(ui) -> None:
    camp = campaign(ui, overlap=1, gold_ratio=0.5, n_prompts=6)
    bad = make_user(ui, "bad")
    me = ui.as_principal(bad)
    while leases := me.tasks.claim(camp.id, want=1):  # every gold item answered wrong
        le = leases[0]
        me.tasks.submit(
            le.task_id,
            le.lease_token,
            uuid.uuid4(),
            {
                "choice": "B" if le.order[0] == 0 else "A",
                "strength": 1,
                "listen_ms": {"A": 300, "B": 400},
                "ratings": {d: 1 + le.task_id % 5 for d in RATING_DIMENSIONS},
            },
        )
    make_user(ui, "rev", Role.reviewer)
    at = login(app(), "rev")
    at.switch_page("app_pages/review.py").run()
    quality = next(df.value for df in at.dataframe if "flags" in df.value.columns)
    assert quality.set_index("rater").loc["bad", "flags"].startswith("low_gold_accuracy")
    at.button(key="q-apply").click().run()
    assert any("Excluded from aggregation: bad" in w.value for w in at.warning)
    assert ui.users.find("bad").cleared_for_aggregation is False
    at.text_input(key=f"q-note-{bad.user_id}").input("checked their work")
    at.button(key=f"q-clear-{bad.user_id}").click().run()
    assert not at.exception and ui.users.find("bad").cleared_for_aggregation is True
    with ui.session() as s:
        notes = s.scalars(select(AuditLog.details).where(AuditLog.action == "raters.clear")).all()
    assert notes == [{"note": "checked their work"}]


def test_admin_creates_user_and_campaign_and_exports(ui) -> None:
    camp = campaign(ui, n_prompts=2)
    _split_votes(ui, camp.id)
    make_user(ui, "ada", Role.admin)
    at = login(app(), "ada")
    at.switch_page("app_pages/admin.py").run()
    assert not at.exception
    at.text_input(key="new-username").input("newbie")
    at.text_input(key="new-password").input("a long password")
    at.selectbox(key="new-role").set_value("reviewer")
    button(at, "Create account").click().run()
    assert any("Account newbie (reviewer) created." == s.value for s in at.success)

    assert at.segmented_control(key="admin-section").value == "Users"  # stays in its section after an action
    at.segmented_control(key="admin-section").set_value("Campaigns").run()
    at.text_input(key="camp-name").input("")  # an invalid name is reported where the admin looks
    button(at, "Create campaign").click().run()
    assert at.segmented_control(key="admin-section").value == "Campaigns"
    assert any(e.value.startswith("The campaign was not created: name") for e in at.error), [e.value for e in at.error]
    at.text_input(key="camp-name").input("second round")
    at.selectbox(key="camp-protocol").set_value("mos")
    at.number_input(key="camp-overlap").set_value(2)
    button(at, "Create campaign").click().run()
    assert not at.exception and any("second round" in s.value for s in at.success)

    at.segmented_control(key="admin-section").set_value("Groups").run()
    at.text_input(key="group-name").input("night")
    at.multiselect(key="group-members").set_value(["newbie"])
    button(at, "Save group").click().run()
    assert not at.exception and any("Group night has 1 members." == s.value for s in at.success)
    at.selectbox(key="assign-campaign").set_value(camp.id)
    at.multiselect(key="assign-groups").set_value(["night"])
    button(at, "Assign").click().run()
    assert at.segmented_control(key="admin-section").value == "Groups"
    assert ui.as_principal(ADMIN).rating.campaign_groups(camp.id) == ["night"]

    at.segmented_control(key="admin-section").set_value("Export").run()
    at.selectbox(key="export-campaign").set_value(camp.id)
    at.radio(key="export-format").set_value("csv")
    button(at, "Prepare export").click().run()
    cid, fmt, data = at.session_state["export"]
    assert (cid, fmt) == (camp.id, "csv") and data.decode().count("\n") == 1 + 4  # header + 2 items x 2 raters
    assert at.download_button(key="export-download") is not None
    with ui.session() as s:
        assert s.scalar(select(User.role).where(User.username == "newbie")) == "reviewer"
        assert s.scalar(text("SELECT protocol FROM campaigns WHERE name = 'second round'")) == "mos"


def test_markdown_escape_renders_user_text_literally() -> None:
    from annotation_ui.widgets import md_escape

    hostile = "![x](http://evil.example/p.png) <img src=x onerror=alert(1)> **bold** $x$\nline2"
    out = md_escape(hostile)
    import re

    assert re.search(r"(?<!\\)[<>!\[\]()*$]", out) is None, out  # every special character is escaped
    assert out.endswith("  \nline2")  # line breaks survive


def test_user_text_has_no_autolinks_and_bidi_controls_are_neutralised() -> None:
    from annotation_ui.widgets import md_escape

    out = md_escape("visit https://evil.example/login or www.evil.example, mail me@evil.example \u202eexe.txt")
    assert "https\\:" + "\u2060" in out and "www\u2060" in out and "@\u2060" in out  # GFM autolink patterns broken
    assert "\u202e" not in out and "\\[U\\+202E\\]" in out


def test_ui_and_services_import_no_torch_or_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, annotation_ui.session, annotation_ui.listen, annotation_ui.widgets, annotation_ui.rating_form,"
        " earmark.services.review, earmark.services.quality;"
        "print(','.join(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the annotation app pulled in heavy modules: {out.stdout}"
