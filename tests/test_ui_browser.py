"""End to end in a real browser: `streamlit run` on 127.0.0.1, Debian chromium driven by playwright.

Logs in, really plays both clips (the listen tracker sees the media element's played ranges),
submits a judgment, saves a screenshot, and checks the judgment row in PostgreSQL and that the
rater's page never contains the policy's name or checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from annotation_fixtures import make_user, seed_rollouts
from conftest import BROWSER_TIMEOUT_MS
from sqlalchemy import select
from streamlit_server import ServedApp

from earmark.domain.enums import Role
from earmark.domain.records import RewardModelCreate, ScoreCreate
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Judgment

CHROMIUM = Path("/usr/bin/chromium")
POLICY = "zebra-policy-xq7"
RM_NAME = "okapi-scorer-q9"
SCORE = 0.918273
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install --no-install-recommends chromium)",
)


@pytest.fixture
def served_app(committed_em, tmp_path: Path) -> Iterator[str]:
    with ServedApp.for_em(committed_em, tmp_path / "streamlit.log") as app:
        yield app.url


def test_rater_plays_both_clips_and_submits_in_chromium(
    committed_em, served_app: str, tmp_path: Path, record_property
) -> None:
    from playwright.sync_api import expect, sync_playwright

    world = seed_rollouts(committed_em, n_prompts=2, policy=POLICY)
    # reward-model scores exist for every clip: distinctive name and value, so "never shown" is checkable
    rm = committed_em.scores.register_reward_model(
        RewardModelCreate(name=RM_NAME, version="7", kind="acoustic", dimensions=["prosody_match"])
    )
    committed_em.scores.ingest(
        [
            ScoreCreate(rollout_id=rid, reward_model_id=rm.id, dimension="prosody_match", score=SCORE)
            for rid in world["rollouts"].values()
        ]
    )
    committed_em.as_principal(Principal(None, "bootstrap", Role.admin)).campaigns.create(
        CampaignCreate(name="browser round", overlap=1, gold_ratio=0.0, instructions="Listen to both clips.")
    )
    rita = make_user(committed_em, "rita")
    shot = tmp_path / "rate-page.png"

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.set_default_timeout(BROWSER_TIMEOUT_MS)
            expect.set_options(timeout=BROWSER_TIMEOUT_MS)
            page.goto(served_app)
            # typing before the first script run has finished can be lost when the form re-renders
            page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
            for name, value in (("Username", "rita"), ("Password", "correct horse battery")):
                box = page.get_by_role("textbox", name=name)
                box.fill(value)
                expect(box).to_have_value(value)
            page.get_by_role("button", name="Log in").click()

            submit = page.get_by_role("button", name="Submit")
            expect(submit).to_be_disabled()  # nothing played yet
            for label in ("A", "B"):
                clip = page.locator("[class*='st-key-clip-']").filter(has_text=f"Clip {label}")
                audio = clip.locator("audio")
                # the native play button does nothing until the element knows its media
                page.wait_for_function("el => el.readyState >= 1", arg=audio.element_handle())
                box = audio.bounding_box()
                audio.click(position={"x": 18, "y": box["height"] / 2})  # the native player's play button
                expect(clip.get_by_text("not played yet")).to_have_count(0)  # the tracker saw it play
            expect(submit).to_be_enabled()

            page.get_by_text("A is better").click()
            page.get_by_text("Clearly", exact=True).click()
            for dim in ("prosody", "persona_consistency", "correctness"):
                page.locator(f"[class*='st-key-dim-{dim}-']").get_by_text("4", exact=True).click()
            page.locator("[class*='st-key-rationale-'] textarea").fill("A sounds calmer, like the persona.")
            html = page.content()
            page.screenshot(path=str(shot), full_page=True)
            record_property("screenshot", str(shot))
            print(f"\nrate page screenshot: {shot}")
            submit.click()
            expect(page.get_by_text("Saved your answer to item #")).to_be_visible()
        finally:
            browser.close()

    assert POLICY not in html and "file:///ckpt" not in html, "the rater page leaked the policy"
    assert RM_NAME not in html and "0.918" not in html and "91.8" not in html, "the rater page leaked a score"
    assert shot.stat().st_size > 10_000
    with committed_em.session() as s:
        rows = s.scalars(select(Judgment)).all()
    assert len(rows) == 1
    j = rows[0]
    assert j.rater_id == rita.user_id and j.protocol == "pairwise" and j.choice in ("A", "B")
    assert j.ratings == {"prosody": 4, "persona_consistency": 4, "correctness": 4}
    assert j.rationale == "A sounds calmer, like the persona."
    # measured in the browser from real playback: the tones last 0.3 s and 0.4 s
    assert set(j.listen_ms) == {"A", "B"} and all(200 <= v <= 2000 for v in j.listen_ms.values()), j.listen_ms
