"""Log in with a local account (argon2id password, throttled after repeated failures), or SSO."""

from __future__ import annotations

import streamlit as st

from annotation_ui import session
from annotation_ui.oidc import sso_button
from earmark.errors import AuthenticationFailed, StoreUnavailable

_, middle, _ = st.columns([1, 1.2, 1])
with middle:
    st.title("earmark")
    st.caption("Listen, compare and rate speech from audio-language models.")
    session.show_flashes()
    with st.form("login"):
        username = st.text_input("Username", key="login-username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login-password", autocomplete="current-password")
        submitted = st.form_submit_button("Log in", type="primary", width="stretch")
    if submitted:
        try:
            principal = session.client().users.authenticate(
                (username or "").strip(), password or "", client=session.client_address(), device=session.device_id()
            )
        except AuthenticationFailed as exc:
            if exc.code == "login_throttled":
                st.error(f"Login paused: {exc.message}.")
            else:
                st.error("Wrong username or password.")
        except StoreUnavailable as exc:
            st.error(f"The preference store is unreachable ({exc.message}); try again shortly.")
        else:
            session.login(principal)
            st.rerun()
    sso_button()
