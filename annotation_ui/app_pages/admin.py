"""Admin: accounts (with CSV import), rater groups, campaigns, progress and exports. Every action goes
through a service that checks the role and writes an audit-log row.

Sections are a segmented control with a session-state key (not ``st.tabs``), so the page stays in
the section where an action happened and every message stays in sight."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from annotation_ui import session
from annotation_ui.widgets import DIMENSION_TITLE
from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import CampaignStatus, Protocol, Regime, Role
from earmark.services.campaigns import CampaignCreate
from earmark.services.review import EXPORT_FORMATS

principal, em = session.page_guard("users.manage")
st.title("Admin")
session.show_flashes()
SECTIONS = ["Users", "Groups", "Campaigns", "Progress", "Export"]
section = (
    st.segmented_control("Section", SECTIONS, default="Users", key="admin-section", label_visibility="collapsed")
    or "Users"
)

if section == "Users":
    users = em.users.list()
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "id": u.id,
                    "username": u.username,
                    "role": u.role.value,
                    "active": u.active,
                    "cleared for aggregation": u.cleared_for_aggregation,
                    "locked until": u.locked_until,
                }
                for u in users
            ]
        ),
        hide_index=True,
    )
    left, right = st.columns(2, gap="large")
    with left, st.form("create-user", clear_on_submit=True):
        st.markdown("**New account**")
        username = st.text_input("Username", key="new-username")
        password = st.text_input("Initial password (8+ characters)", type="password", key="new-password")
        role = st.selectbox("Role", [Role.rater.value, Role.reviewer.value, Role.admin.value], key="new-role")
        if st.form_submit_button("Create account", type="primary"):
            with session.service_errors("create the account"):
                info = em.users.create(username.strip(), password, role)
                session.flash("success", f"Account {info.username} ({info.role.value}) created.")
                st.rerun()
    with right:
        with st.form("import-users", clear_on_submit=False):
            st.markdown("**Import accounts from CSV**")
            st.caption(
                "Header `username,password[,role][,groups]`; role defaults to rater; groups separated by `;`. "
                "All rows are checked first: nothing is created if one is wrong."
            )
            upload = st.file_uploader("CSV file", type=["csv"], key="import-file")
            if st.form_submit_button("Import"):
                if upload is None:
                    st.error("Choose a CSV file first.")
                else:
                    with session.service_errors("import the accounts"):
                        made = em.users.import_csv(upload.getvalue())
                        session.flash(
                            "success", f"Imported {len(made)} accounts: {', '.join(u.username for u in made)}."
                        )
                        st.rerun()
        st.markdown("**Activate or deactivate**")
        others = [u for u in users if u.id != principal.user_id]  # locking yourself out helps no one
        if others:
            users_by_id = {u.id: u for u in others}
            uid = st.selectbox(
                "Account",
                list(users_by_id),
                key="toggle-user",
                format_func=lambda i: (
                    f"{users_by_id[i].username} ({'active' if users_by_id[i].active else 'inactive'})"
                ),
            )
            target = users_by_id[uid]
            if st.button("Deactivate" if target.active else "Reactivate", key="toggle-active"):
                with session.service_errors("change the account"):
                    em.users.set_active(uid, not target.active)
                    session.flash("success", f"{target.username} is now {'inactive' if target.active else 'active'}.")
                    st.rerun()

if section == "Groups":
    groups = em.rating.groups()
    camp_names = {c.id: c.name for c in em.campaigns.list()}
    if groups:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "group": g.name,
                        "members": ", ".join(g.members),
                        "campaigns": ", ".join(camp_names.get(c, str(c)) for c in g.campaigns),
                    }
                    for g in groups
                ]
            ),
            hide_index=True,
        )
    else:
        st.info("No rater groups yet. A campaign without groups is served to every rater.")
    left, right = st.columns(2, gap="large")
    with left, st.form("group-members"):
        st.markdown("**Group members** (creates the group if new)")
        gname = st.text_input("Group name", key="group-name")
        all_users = [u.username for u in em.users.list() if u.active]
        members = st.multiselect("Members", all_users, key="group-members")
        if st.form_submit_button("Save group", type="primary"):
            with session.service_errors("save the group"):
                em.rating.set_members(gname, members)
                session.flash("success", f"Group {gname.strip()} has {len(members)} members.")
                st.rerun()
    with right:
        if camp_names:
            with st.form("campaign-groups"):
                st.markdown("**Assign a campaign to groups** (none = every rater)")
                acid = st.selectbox("Campaign", list(camp_names), format_func=camp_names.get, key="assign-campaign")
                chosen = st.multiselect("Groups", [g.name for g in groups], key="assign-groups")
                if st.form_submit_button("Assign"):
                    with session.service_errors("assign the campaign"):
                        em.rating.assign_campaign(acid, chosen)
                        session.flash(
                            "success",
                            f"{camp_names[acid]} is served to "
                            + (", ".join(chosen) if chosen else "every rater")
                            + ".",
                        )
                        st.rerun()

if section == "Campaigns":
    campaigns = em.campaigns.list()
    if campaigns:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "id": c.id,
                        "name": c.name,
                        "protocol": c.protocol,
                        "status": c.status,
                        "overlap": c.overlap,
                        "gold ratio": c.gold_ratio,
                        "dimensions": ", ".join(c.dimensions),
                        "created": c.created_at,
                    }
                    for c in campaigns
                ]
            ),
            hide_index=True,
        )
        camps_by_id = {c.id: c for c in campaigns}
        c1, c2, c3 = st.columns([3, 2, 1], vertical_alignment="bottom")
        cid = c1.selectbox(
            "Campaign", list(camps_by_id), format_func=lambda i: camps_by_id[i].name, key="status-campaign"
        )
        statuses = [s.value for s in CampaignStatus]
        status = c2.selectbox("Status", statuses, index=statuses.index(camps_by_id[cid].status), key="status-value")
        if c3.button("Set status", key="status-set"):
            with session.service_errors("change the campaign status"):
                em.campaigns.set_status(cid, CampaignStatus(status))
                session.flash("success", f"{camps_by_id[cid].name} is now {status}.")
                st.rerun()

    policies = em.catalog.policies()
    with st.form("create-campaign"):
        st.markdown("**New campaign**")
        st.caption("Raters see the campaign name and instructions: keep model and policy names out of both.")
        name = st.text_input("Name", key="camp-name")
        c1, c2, c3 = st.columns(3)
        protocol = c1.selectbox(
            "Protocol",
            [p.value for p in Protocol],
            key="camp-protocol",
            help="timeline: raters mark events on duplex sessions (duplex rollouts with a "
            "timeline only). mushra: prompts whose reference has audio get a hidden "
            "reference and a 3.5 kHz low anchor.",
        )
        overlap = c2.number_input("Raters per item (overlap k)", 1, 50, 3, key="camp-overlap")
        gold = c3.slider(
            "Gold ratio",
            0.0,
            0.5,
            0.1,
            0.05,
            key="camp-gold",
            help="Share of planted items with a known answer (pairwise and CMOS).",
        )
        pol_by_id = {p.id: f"{p.name} v{p.version}" for p in policies}
        policy_ids = st.multiselect(
            "Policy versions (none = all)", list(pol_by_id), format_func=pol_by_id.get, key="camp-policies"
        )
        c4, c5 = st.columns(2)
        regime = c4.selectbox("Regime", ["any"] + [r.value for r in Regime], key="camp-regime")
        max_items = c5.number_input("Maximum items", 1, 100_000, 200, key="camp-max")
        dims = st.multiselect(
            "Rating dimensions",
            list(RATING_DIMENSIONS),
            default=list(RATING_DIMENSIONS),
            format_func=DIMENSION_TITLE.get,
            key="camp-dims",
        )
        instructions = st.text_area("Instructions for raters", max_chars=4000, key="camp-instructions")
        if st.form_submit_button("Create campaign", type="primary"):
            try:
                spec = CampaignCreate(
                    name=name.strip(),
                    protocol=protocol,
                    dimensions=dims,
                    overlap=int(overlap),
                    gold_ratio=float(gold),
                    instructions=instructions,
                    policy_ids=policy_ids or None,
                    regime=None if regime == "any" else regime,
                    max_items=int(max_items),
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                field_name = ".".join(map(str, err["loc"])) or "campaign"
                st.error(f"The campaign was not created: {field_name}: {err['msg']}. Fix it and press Create again.")
            else:
                with session.service_errors("create the campaign"):
                    camp = em.campaigns.create(spec)
                    session.flash("success", f"Campaign {camp.name} created and open for rating.")
                    st.rerun()

if section == "Progress":
    campaigns = em.campaigns.list()
    if not campaigns:
        st.info("No campaigns yet.")
    for camp in campaigns:
        prog = em.campaigns.progress(camp.id)
        with st.container(border=True):
            st.markdown(f"**{camp.name}** · {camp.protocol} · {camp.status} · {prog.items} items × k={camp.overlap}")
            m = st.columns(4)
            m[0].metric("Done", prog.done)
            m[1].metric("Leased", prog.leased)
            m[2].metric("Open", prog.open)
            m[3].metric("Tasks", prog.tasks)
            st.progress(prog.done / prog.tasks if prog.tasks else 0.0)
            rows = em.review.throughput(camp.id)
            if rows:
                st.dataframe(
                    pd.DataFrame(
                        [
                            {
                                "rater": r.rater,
                                "judgments": r.judgments,
                                "per hour": r.per_hour,
                                "median s/item": r.median_s,
                                "first": r.first_at,
                                "last": r.last_at,
                            }
                            for r in rows
                        ]
                    ),
                    hide_index=True,
                )

if section == "Export":
    campaigns = em.campaigns.list()
    if campaigns:
        export_by_id = {c.id: c for c in campaigns}
        c1, c2 = st.columns([3, 1])
        cid = c1.selectbox(
            "Campaign", list(export_by_id), format_func=lambda i: export_by_id[i].name, key="export-campaign"
        )
        fmt = c2.radio("Format", EXPORT_FORMATS, horizontal=True, key="export-format")
        if st.button("Prepare export", key="export-prepare"):
            with session.service_errors("export the judgments"):
                st.session_state["export"] = (cid, fmt, em.review.export(cid, fmt))
        ready = st.session_state.get("export")
        if ready and ready[:2] == (cid, fmt):
            st.download_button(
                f"Download {len(ready[2]):,} bytes",
                ready[2],
                key="export-download",
                file_name=f"{export_by_id[cid].name}-judgments.{fmt}",
                mime="text/csv" if fmt == "csv" else "application/jsonl",
                on_click="ignore",
            )
