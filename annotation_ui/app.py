"""The annotation app's router: ``streamlit run annotation_ui/app.py`` (or ``earmark ui``).

Navigation is built per session from the logged-in user's permissions (``earmark.security``):
a page a role may not use is not registered at all, so it is neither listed nor reachable by
URL, and each page checks again on its own (``session.page_guard``).
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from annotation_ui import browser, session, timing
from annotation_ui.oidc import oidc_configured, oidc_login
from earmark.errors import StoreUnavailable
from earmark.security import Principal

st.set_page_config(page_title="earmark · annotation", page_icon="🎧", layout="wide")


@dataclass(frozen=True)
class PageSpec:
    path: str
    title: str
    icon: str
    action: str  # the permission (earmark.security.PERMISSIONS) the page needs
    section: str


PAGES = [
    PageSpec("app_pages/rate.py", "Rate", ":material/headphones:", "tasks.rate", "Annotate"),
    PageSpec("app_pages/review.py", "Review", ":material/gavel:", "judgments.review", "Review"),
    PageSpec("app_pages/dashboard.py", "Dashboard", ":material/monitoring:", "dashboard.view", "Review"),
    PageSpec("app_pages/drift.py", "Reward drift", ":material/query_stats:", "dashboard.view", "Review"),
    PageSpec("app_pages/admin.py", "Admin", ":material/admin_panel_settings:", "users.manage", "Admin"),
]


def pages_for(principal: Principal) -> dict[str, list[st.Page]]:
    sections: dict[str, list[st.Page]] = {}
    for spec in PAGES:
        if session.allowed(principal, spec.action):
            sections.setdefault(spec.section, []).append(st.Page(spec.path, title=spec.title, icon=spec.icon))
    return sections


def _main() -> None:
    try:
        auth = session.current_login()
    except StoreUnavailable as exc:
        browser.page_support(**session.cookie_action())
        st.error(
            f"The preference store is unreachable ({exc.message}). Nothing can be saved or loaded right now; "
            "this page retries when you reload it. Your answers that showed 'Saved' are stored.",
            icon=":material/cloud_off:",
        )
        st.stop()
    browser.page_support(**session.cookie_action())
    if auth is None and oidc_configured():
        auth = oidc_login()

    if auth is None:
        nav = st.navigation(
            [st.Page("app_pages/login.py", title="Log in", icon=":material/login:", default=True)], position="hidden"
        )
    else:
        sections = pages_for(auth.principal)
        if not sections:
            st.error(
                f"Your role ({auth.principal.role.value}) has no pages in the annotation app; use the earmark CLI."
            )
            sections = {"": [st.Page("app_pages/login.py", title="Log in")]}
        nav = st.navigation(sections)
        with st.sidebar:
            st.caption(f"Signed in as **{auth.principal.username}** · {session.role_label(auth.principal.role)}")
            if st.button("Log out", icon=":material/logout:", key="logout"):
                via = auth.via
                session.logout("You are logged out.")
                if via == "oidc":
                    st.logout()
                st.rerun()
    with session.login_checked(auth):
        nav.run()


timing.configure(session.settings().log_level)
with timing.timed("app"):
    _main()
