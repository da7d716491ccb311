"""The drift dashboard page: in AppTest, and in chromium with a saved screenshot.

A tiny wrapper script (written to tmp_path) connects through EARMARK_DATABASE_URL, skips the
login and calls ``annotation_ui.drift_page.render(em)`` with a principal of the given role, the
way the app's router will once the page is wired in.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import altair  # noqa: F401  # warm imports, so no AppTest run pays for them
import pandas  # noqa: F401
import pytest
from conftest import BROWSER_TIMEOUT_MS
from drift_fixtures import build_world
from streamlit.testing.v1 import AppTest
from streamlit_server import ServedApp

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
WRAPPER = """
import streamlit as st
from earmark.api import connect
from earmark.config import Settings
from earmark.domain.enums import Role
from earmark.security import Principal
from annotation_ui.drift_page import render

st.set_page_config(page_title="drift", layout="wide")


@st.cache_resource
def client(url):
    return connect(Settings())


render(client(Settings().database_url.get_secret_value()).as_principal(Principal(None, "lead", Role.{role})))
"""


def wrapper(tmp_path: Path, role: str = "reviewer") -> Path:
    path = tmp_path / f"drift_{role}.py"
    path.write_text(WRAPPER.format(role=role))
    return path


@pytest.fixture
def env(committed_em, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    cfg = committed_em.settings
    monkeypatch.setenv("EARMARK_DATABASE_URL", cfg.database_url.get_secret_value())
    monkeypatch.setenv("EARMARK_BLOB_URL", cfg.blob_url)
    monkeypatch.setenv("EARMARK_HOME", str(cfg.home))
    yield committed_em
    import streamlit as st

    st.cache_resource.clear()  # closes the page's engine before committed_em truncates the tables


def text_of(at: AppTest) -> str:
    parts = [
        e.value
        for kind in ("title", "markdown", "caption", "info", "error", "success", "warning")
        for e in getattr(at, kind)
    ]
    return "\n".join(map(str, parts))


def test_page_renders_with_data_and_filters_work(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARMARK_DRIFT_BOOTSTRAP", "30")
    build_world(env, shift=1.5)
    monkeypatch.syspath_prepend(str(REPO))
    at = AppTest.from_file(str(wrapper(tmp_path)), default_timeout=90).run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Reward drift"]
    assert at.selectbox(key="drift-policy").value == "speech"
    assert at.selectbox(key="drift-baseline").value == 0 and at.selectbox(key="drift-candidate").value == 2
    body = text_of(at)
    assert "alert(s) fired for v2" in body and "bt@1/preference" in body
    assert len(at.tabs) == 7
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 8, len(charts)
    assert len(at.dataframe) >= 2  # summary and leaderboard tables

    # filters: another candidate, a regime, a dimension that did not move
    at.selectbox(key="drift-candidate").set_value(1).run()
    assert not at.exception and "v0 (baseline)" not in text_of(at)
    assert at.multiselect(key="drift-regimes").options == ["realtime"]
    at.multiselect(key="drift-regimes").set_value(["realtime"]).run()
    assert not at.exception
    at.multiselect(key="drift-dims").set_value(["exact_match"]).run()
    assert not at.exception
    assert any("No alert fired" in s.value for s in at.success)
    assert "bt@1/preference" not in text_of(at)
    at.multiselect(key="drift-dims").set_value([]).run()

    # store the alerts from the page, then acknowledge one
    at.selectbox(key="drift-candidate").set_value(2).run()
    at.button(key="drift-store").click().run()
    assert any("Stored" in s.value for s in at.success)
    at.text_input(key="drift-ack-note").input("new reward model version")
    at.button(key="drift-ack").click().run()
    assert not at.exception


def test_page_refuses_a_rater_and_handles_an_empty_store(env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    at = AppTest.from_file(str(wrapper(tmp_path, "rater")), default_timeout=60).run()
    assert not at.exception
    assert any("Not allowed" in e.value for e in at.error)
    at = AppTest.from_file(str(wrapper(tmp_path, "reviewer")), default_timeout=60).run()
    assert not at.exception
    assert any("No policy has two versions yet" in i.value for i in at.info)


@pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install --no-install-recommends chromium)",
)
def test_drift_page_in_chromium_saves_a_screenshot(env, tmp_path: Path, record_property) -> None:
    from playwright.sync_api import expect, sync_playwright

    build_world(env, shift=1.5)
    shot = tmp_path / "drift-page.png"
    served = ServedApp.for_em(
        env,
        tmp_path / "streamlit.log",
        script=wrapper(tmp_path),
        extra_env={
            "EARMARK_DRIFT_BOOTSTRAP": "30",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        },
    )
    with served:
        url = served.url
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.set_default_timeout(BROWSER_TIMEOUT_MS)
                expect.set_options(timeout=BROWSER_TIMEOUT_MS)
                page.goto(url)
                page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']")
                expect(page.get_by_role("heading", name="Reward drift")).to_be_visible()
                expect(page.get_by_text("alert(s) fired for v2")).to_be_visible()
                expect(page.locator("canvas, svg.marks").first).to_be_visible()  # a Vega chart drew
                page.screenshot(path=str(shot), full_page=True)
                page.get_by_role("tab", name="Leaderboard").click()
                expect(page.get_by_text("Style coefficients")).to_be_visible()
            finally:
                browser.close()
    record_property("screenshot", str(shot))
    print(f"\ndrift page screenshot: {shot}")
    assert shot.stat().st_size > 20_000
