"""Reward drift: distributions across policy versions, drift and hacking signals, the trap panel."""

from __future__ import annotations

from annotation_ui import drift_page, session

principal, em = session.page_guard("dashboard.view")
session.show_flashes()
drift_page.render(em)
