"""Optional single sign-on through Streamlit's ``st.login`` (OIDC), only when ``.streamlit/secrets.toml``
has an ``[auth]`` section. The identity provider proves who someone is; the role still comes from
an earmark account whose username is the person's e-mail address, created by an admin."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from annotation_ui import session
from earmark.security import Principal


def oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, StreamlitAPIException):  # no secrets file: Streamlit raises, not returns empty
        return False


def oidc_login() -> session.Login | None:
    """Map a logged-in OIDC identity to its earmark account, or explain why it cannot be."""
    if not getattr(st.user, "is_logged_in", False):
        return None
    email = st.user.get("email")
    info = session.client().users.find(email) if email else None
    if info is None or not info.active:
        st.error(
            f"No active earmark account for {email or 'this identity'}; ask an admin to create one "
            "with your e-mail address as the username."
        )
        return None
    session.login(Principal(info.id, info.username, info.role), via="oidc")
    return session.current_login()


def sso_button() -> None:
    if oidc_configured() and st.button("Log in with single sign-on", icon=":material/key:"):
        st.login()
