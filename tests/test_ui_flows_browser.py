"""Issue 18 flows in a real browser (Debian chromium through playwright) against `streamlit run`, at
desktop (1280x800) and phone (390x844) width. Screenshots are kept under tests/artifacts/ (gitignored).

- a rater: the campaign with work is preselected, progress is shown, hotkeys play the clips and
  answer, nothing is preset, missing answers are reported next to their question, a reload keeps
  the login and the item, Skip gives the item to others, prompt text shows no links and no
  reversed text;
- an admin: landing on Rate leases nothing; the Admin page keeps its section and shows its errors;
- a server restart: the page says the server is unreachable, and once it is back it shows which
  answer was saved.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest
from annotation_fixtures import make_user, seed_rollouts
from sqlalchemy import select, text
from streamlit_server import REPO, ServedApp

from earmark.domain.enums import Role
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Judgment, Task, TaskSkip

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
ADMIN = Principal(None, "bootstrap", Role.admin)
PASSWORD = "correct horse battery"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
WAIT_MS = 60_000  # the machine is shared and loaded: wait on conditions, generously

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")


@pytest.fixture
def served(committed_em, tmp_path: Path):
    app = ServedApp.for_em(committed_em, tmp_path / "streamlit.log")
    app.start()
    try:
        yield app
    finally:
        app.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser, viewport: str):
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    ctx = browser.new_context(viewport=VIEWPORTS[viewport])
    page = ctx.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda m: print("console:", m.type, m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: print("pageerror:", e))
    return page


def _idle(page) -> None:
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=WAIT_MS)


def _login(page, url: str, username: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    _idle(page)
    for name, value in (("Username", username), ("Password", PASSWORD)):
        box = page.get_by_role("textbox", name=name)
        box.fill(value)
        expect(box).to_have_value(value)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Rate")).to_be_visible(timeout=WAIT_MS)


def _shot(page, name: str, viewport: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}-{viewport}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _item_id(page) -> int:
    from playwright.sync_api import expect

    cap = page.get_by_text(re.compile(r"^Item #\d+$")).first
    expect(cap).to_be_visible(timeout=WAIT_MS)
    return int(cap.inner_text().split("#")[1].split()[0])


def _world(em, hostile: bool = False) -> dict:
    seed_rollouts(em, n_prompts=3, policy="zebra-policy-xq7")
    if hostile:
        with em.session() as s, s.begin():
            s.execute(
                text("UPDATE prompts SET messages = CAST(:m AS jsonb)"),
                {
                    "m": json.dumps(
                        [{"role": "user", "content": "Open https://evil.example/login now \u202eexe.txt please"}]
                    )
                },
            )
    admin = em.as_principal(ADMIN)
    old = admin.campaigns.create(CampaignCreate(name="with work", overlap=2, gold_ratio=0.0))
    new = admin.campaigns.create(CampaignCreate(name="newest done", overlap=1, gold_ratio=0.0, max_items=1))
    rita = make_user(em, "rita")
    mine = em.as_principal(rita)
    lease = mine.tasks.claim(new.id, want=1)[0]
    mine.tasks.submit(
        lease.task_id,
        lease.lease_token,
        uuid.uuid4(),
        {"choice": "tie", "ratings": {"prosody": 3, "persona_consistency": 3, "correctness": 3}},
    )
    return {"old": old, "new": new, "rita": rita}


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_rater_flow(committed_em, served, browser, viewport: str, record_property) -> None:
    from playwright.sync_api import expect

    world = _world(committed_em, hostile=True)
    page = _page(browser, viewport)
    _login(page, served.url, "rita")
    # the newest campaign has nothing left for her: the one with work is preselected
    expect(page.get_by_role("combobox", name="Campaign")).to_have_value("with work · 3 left for you")
    progress = page.locator("p", has_text="left in campaign")
    expect(progress).to_be_visible()  # persistent progress, also on a phone
    expect(progress).to_contain_text("0 done")
    first = _item_id(page)

    # user text: no link, no reversed text
    conv = page.get_by_text("Open https", exact=False).first
    expect(conv).to_be_visible()
    assert page.locator("[data-testid='stChatMessage'] a").count() == 0
    assert "\u202e" not in page.inner_text("body") and "[U+202E]" in page.inner_text("body")

    # nothing preset: no radio in the form is checked
    form = page.locator("[data-testid='stForm']")
    expect(form.locator("input[type='radio']:checked")).to_have_count(0)

    # hotkeys: Q and W play the clips; the tracker sees them play
    expect(page.locator("[class*='st-key-clip-'] audio")).to_have_count(2)
    _idle(page)
    # waveforms are pictures: one per clip, and nothing in them (nor their toolbar) takes a Tab stop
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll(\"[class*='st-key-clip-'] img[alt='Waveform of the clip']\")];"
        " return imgs.length === 2 && imgs.every((img) => img.complete && img.naturalWidth > 0 && [...("
        "img.closest(\"[data-testid='stElementContainer']\") || img.parentElement).querySelectorAll("
        "'[tabindex], button, a, summary')].every((e) => e.getAttribute('tabindex') === '-1')); }",
        timeout=WAIT_MS,
    )
    for key, label in (("q", "A"), ("w", "B")):
        page.keyboard.press(key)
        clip = page.locator("[class*='st-key-clip-']").filter(has_text=f"Clip {label}")
        expect(clip.get_by_text("played", exact=False).last).to_be_visible()
        expect(clip.get_by_text("not played yet")).to_have_count(0)
    submit = page.get_by_role("button", name="Submit")
    expect(submit).to_be_enabled()

    # missing answers are reported next to their questions
    submit.click()
    expect(page.get_by_text("Choose which response is better")).to_be_visible()
    expect(page.get_by_text("answer(s) missing")).to_be_visible()
    _shot(page, "rate-missing-answers", viewport)

    # answer by keys: A better, clearly, 4 4 4; the rationale by typing
    for key in ("a", "c", "4", "4", "4"):
        page.locator("body").press(key)
    expect(form.locator("input[type='radio']:checked")).to_have_count(5)
    page.locator("[class*='st-key-rationale-'] textarea").fill("A sounds calmer.")
    _shot(page, "rate-answered", viewport)
    page.locator("[class*='st-key-rationale-'] textarea").press("Control+Enter")
    # the flash says so once; the progress line keeps saying it (a later rerun clears the flash)
    expect(progress).to_contain_text(f"last answer saved: item #{first}")
    expect(progress).to_contain_text("1 done")
    _idle(page)
    _shot(page, "rate-saved", viewport)
    second = _item_id(page)
    assert second != first

    # F5: still logged in, the same item, told what was saved
    page.reload()
    expect(page.get_by_text("Welcome back.", exact=False)).to_be_visible(timeout=WAIT_MS)
    assert _item_id(page) == second
    expect(page.get_by_text(f"Your last saved answer is item #{first}", exact=False)).to_be_visible()
    _shot(page, "rate-after-reload", viewport)

    # Skip: the item goes to others and never comes back to her
    page.get_by_role("button", name="Skip this item").click()
    expect(page.get_by_text(f"Skipped item #{second}", exact=False).first).to_be_visible()
    _idle(page)  # the flash comes first in the run; the previous item's caption is gone once it ends
    third = _item_id(page)
    assert third not in (first, second)
    with committed_em.session() as s:
        skipped = s.scalars(select(TaskSkip.comparison_id).where(TaskSkip.rater_id == world["rita"].user_id)).all()
        comp = s.scalar(select(Task.comparison_id).where(Task.id == second))
        mine = s.scalars(select(Judgment).where(Judgment.task_id == first)).all()
    assert skipped == [comp]
    assert len(mine) == 1 and mine[0].ratings == {"prosody": 4, "persona_consistency": 4, "correctness": 4}
    assert mine[0].rationale == "A sounds calmer." and mine[0].listen_ms["A"] >= 150
    record_property("screenshots", str(ARTIFACTS))


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_admin_flow(committed_em, served, browser, viewport: str) -> None:
    from playwright.sync_api import expect

    _world(committed_em)
    make_user(committed_em, "ada", Role.admin)
    page = _page(browser, viewport)
    _login(page, served.url, "ada")
    expect(page.get_by_role("button", name="Start rating")).to_be_visible()
    with committed_em.session() as s:  # landing on Rate leased nothing
        assert s.scalar(text("SELECT count(*) FROM tasks WHERE status = 'leased'")) == 0
    _shot(page, "admin-rate-landing", viewport)

    page.goto(served.url + "/admin")
    expect(page.get_by_role("heading", name="Admin")).to_be_visible()
    _idle(page)
    page.locator("[class*='st-key-admin-section']").get_by_text("Campaigns", exact=True).click()
    create = page.get_by_role("button", name="Create campaign")
    expect(create).to_be_visible()
    create.click()  # empty name: the error is shown, in this section
    expect(page.get_by_text("The campaign was not created: name", exact=False)).to_be_visible()
    expect(create).to_be_visible()
    _shot(page, "admin-campaign-error", viewport)
    with committed_em.session() as s:
        assert s.scalar(text("SELECT count(*) FROM tasks WHERE status = 'leased'")) == 0


def test_server_restart_shows_banner_then_saved_state(committed_em, served, browser) -> None:
    from playwright.sync_api import expect

    _world(committed_em)
    for viewport in VIEWPORTS:
        page = _page(browser, viewport)
        if viewport == "desktop":
            _login(page, served.url, "rita")
        else:  # same cookie jar is per context: log in again on the phone
            _login(page, served.url, "rita")
        item = _item_id(page)
        served.stop()
        banner = page.locator("#earmark-offline")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("server is unreachable")
        _shot(page, "server-unreachable", viewport)
        served.start()
        expect(page.get_by_text("Welcome back.", exact=False)).to_be_visible(timeout=WAIT_MS)
        assert _item_id(page) == item  # the lease was kept
        expect(page.get_by_text(f"Item #{item} below is not saved yet.", exact=False)).to_be_visible()
        _shot(page, "server-back", viewport)
        page.context.close()
