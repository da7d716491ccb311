"""Review: disputed items with every judgment side by side, adjudicated labels, rater quality.

Reviewers see who said what (they judge raters too) but, like raters, never which policy or
score produced a clip: ``ReviewService`` views carry no such fields. Labels here are canonical
(A = the comparison's first rollout), translated from whatever order each rater was shown.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from annotation_ui import session, timeline, widgets
from annotation_ui.rating_form import CHOICE_LABELS, STRENGTH_LABELS
from earmark.services.quality import QualityConfig, RaterQuality
from earmark.services.review import ReviewItem

principal, em = session.page_guard("judgments.review")
st.title("Review")
session.show_flashes()

campaigns = em.campaigns.list()
if not campaigns:
    st.info("No campaigns yet.")
    st.stop()
names = {c.id: f"{c.name} ({c.protocol}, {c.status})" for c in campaigns}
campaign_id = st.selectbox("Campaign", list(names), format_func=lambda i: names[i], key="review-campaign")
items_tab, raters_tab = st.tabs(["Disputed items", "Rater quality"])


def _judgment_table(item: ReviewItem) -> pd.DataFrame:
    rows = []
    for j in item.judgments:
        row = {
            "rater": j.rater,
            "cleared": j.cleared,
            "choice": CHOICE_LABELS.get(j.choice or "", j.choice or "—"),
            "strength": STRENGTH_LABELS.get(round(abs(j.preference) * 3)) if j.preference else None,
        }
        row |= {k: (str(v) if isinstance(v, list) else v) for k, v in (j.ratings or {}).items()}
        if item.protocol == "timeline":
            row["events"] = len(j.events)
        row |= {
            "rationale": j.rationale,
            "heard (s)": ", ".join(f"{k} {v / 1000:.1f}" for k, v in j.listen_ms.items()),
            "shown order": " ".join(j.shown_order),
            "late": j.late,
        }
        rows.append(row)
    return pd.DataFrame(rows)


def _show_timeline(item: ReviewItem) -> None:
    """The session with every rater's marks on one axis, then their events side by side."""
    view = em.review.timeline(item.comparison_id)
    audio = {timeline.MIX: em.review.timeline_audio(view, "stereo")}
    audio |= {t: em.review.timeline_audio(view, t) for t in timeline.TRACK_LABELS if view.track(t).audio_sha256}
    marks = [{**e, "who": j.rater} for j in item.judgments for e in j.events]
    timeline.chart(view, audio, marks)
    st.markdown("**Whole session** (stereo: user left, assistant right)")
    st.audio(audio[timeline.MIX], format="audio/wav")
    st.markdown("**Events marked by each rater**")
    timeline.events_side_by_side(item.judgments)


def _show_item(comparison_id: int) -> None:
    item = em.review.item(comparison_id)
    if item.is_gold:
        st.info(f"Gold item: the known answer is {item.gold_answer}.")
    left, right = st.columns([2, 3])
    with left:
        widgets.persona_card(item.persona)
    with right:
        widgets.conversation(item.conversation, lambda i: em.review.audio(item, f"prompt{i}"))
    if item.protocol == "timeline":
        _show_timeline(item)
    for col, stim in zip(st.columns(len(item.stimuli)), item.stimuli if item.protocol != "timeline" else []):
        with col, st.container(border=True):
            st.markdown(f"**Response {stim.label}** · {widgets.duration_label(stim.duration_s)}")
            if stim.audio_sha256:
                data = em.review.audio(item, stim.label)
                st.audio(data, format="audio/wav")
                widgets.waveform(data)
            if stim.transcript:
                with st.expander("Transcript"):
                    st.markdown(widgets.md_escape(stim.transcript))
    st.markdown("**Judgments** (choices in canonical labels)")
    st.dataframe(_judgment_table(item), hide_index=True)

    if item.protocol not in ("pairwise", "cmos"):
        st.caption("Adjudicated labels are A/B choices: they apply to pairwise and CMOS items only.")
        return
    current = item.adjudication
    if current:
        st.caption(
            f"Adjudicated {CHOICE_LABELS.get(current.choice, current.choice)} by {current.reviewer} "
            f"at {current.created_at:%Y-%m-%d %H:%M}. A new decision replaces it."
        )
    with st.form(f"adjudicate-{comparison_id}"):
        options = list(CHOICE_LABELS)
        choice = st.radio(
            "Adjudicated label",
            options,
            horizontal=True,
            format_func=CHOICE_LABELS.get,
            index=options.index(current.choice) if current else None,
            key=f"adj-choice-{comparison_id}",
        )
        strength = st.select_slider(
            "How much better?",
            options=list(STRENGTH_LABELS),
            value=2,
            format_func=STRENGTH_LABELS.get,
            key=f"adj-strength-{comparison_id}",
        )
        note = st.text_area(
            "Note (why)",
            value=current.note if current else "",
            key=f"adj-note-{comparison_id}",
            max_chars=4000,
            height=70,
        )
        if st.form_submit_button("Save decision", type="primary"):
            if choice is None:
                st.error("Pick a label first.")
            else:
                pref = {"A": strength / 3, "B": -strength / 3}.get(choice, 0.0)
                with session.service_errors("save the decision"):
                    em.review.adjudicate(comparison_id, choice, pref, note or "")
                    session.flash("success", f"Decision saved for item {comparison_id}.")
                    st.rerun()


with items_tab:
    c1, c2 = st.columns(2)
    min_dis = c1.slider(
        "Minimum choice disagreement",
        0.0,
        0.75,
        0.3,
        0.05,
        key="review-min-dis",
        help="1 − share of the most common choice. Items split between A and B always show.",
    )
    min_std = c2.slider("Minimum rating spread (std, 1-5 scale)", 0.25, 2.5, 1.0, 0.25, key="review-min-std")
    with session.service_errors("list disputed items"):
        disputed = em.review.disputed(campaign_id, min_disagreement=min_dis, rating_std=min_std)
        if not disputed:
            st.success("No disputed items at these thresholds.")
        else:
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "item": d.comparison_id,
                            "judgments": d.judgments,
                            "A/B split": d.split,
                            "disagreement": d.choice_disagreement,
                            "rating spread": d.rating_spread,
                            "summary": d.summary,
                            "adjudicated": CHOICE_LABELS.get(d.adjudication.choice) if d.adjudication else "",
                        }
                        for d in disputed
                    ]
                ),
                hide_index=True,
            )
            disputed_by_id = {d.comparison_id: d for d in disputed}
            chosen = st.selectbox(
                "Open item",
                list(disputed_by_id),
                key="review-item",
                format_func=lambda i: f"#{i} · {disputed_by_id[i].summary}",
            )
            _show_item(chosen)


def _quality_frame(report: list[RaterQuality]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "rater": q.username,
                "cleared": q.cleared,
                "judgments": q.judgments,
                "gold accuracy": q.gold_accuracy,
                "gold items": q.gold_items,
                "peer agreement": q.peer_agreement,
                "peer items": q.peer_items,
                "votes test": f"{q.sprt.decision} (LLR {q.sprt.llr:+.2f}, p={q.sprt.p_value:.3f})" if q.sprt else "",
                "hidden-ref fails": q.hidden_ref_fail_rate,
                "picks shown-first": q.first_position_share,
                "min rating std": min(q.rating_std.values()) if q.rating_std else None,
                "flags": ", ".join(q.flags),
            }
            for q in report
        ]
    )


with raters_tab:
    scope_all = st.toggle(
        "All campaigns (a rater's gold accuracy is theirs, not a campaign's)", value=False, key="review-all"
    )
    with st.expander("Gold-accuracy screen"):
        c1, c2 = st.columns(2)
        thr = c1.number_input("Minimum gold accuracy", 0.0, 1.0, QualityConfig.min_gold_accuracy, 0.05, key="q-thr")
        min_gold = int(c2.number_input("Minimum gold items", 1, 1000, QualityConfig.min_gold_items, key="q-min"))
        if st.button("Exclude raters below the threshold", key="q-apply"):
            with session.service_errors("apply the gold screen"):
                excluded = em.quality.apply_gold_flags(QualityConfig(min_gold_accuracy=thr, min_gold_items=min_gold))
                session.flash(
                    "warning" if excluded else "success",
                    f"Excluded from aggregation: {', '.join(q.username for q in excluded)}"
                    if excluded
                    else "No rater newly excluded.",
                )
                st.rerun()
    with st.expander("MUSHRA hidden-reference screen (ITU-R BS.1534-3)"):
        st.caption(
            f"Excludes assessors who rated the hidden reference below {QualityConfig.hidden_ref_min} on more "
            f"than {QualityConfig.hidden_ref_max_fail:.0%} of their items with one."
        )
        if st.button("Exclude raters failing the hidden reference", key="q-hidden-apply"):
            with session.service_errors("apply the hidden-reference screen"):
                excluded = em.quality.apply_hidden_reference_screen()
                session.flash(
                    "warning" if excluded else "success",
                    f"Excluded from aggregation: {', '.join(q.username for q in excluded)}"
                    if excluded
                    else "No rater newly excluded.",
                )
                st.rerun()
    cfg = QualityConfig(min_gold_accuracy=thr, min_gold_items=min_gold)
    with session.service_errors("compute rater quality"):
        report = em.quality.rater_report(None if scope_all else campaign_id, cfg)
        if not report:
            st.info("No judgments yet.")
        else:
            st.dataframe(_quality_frame(report), hide_index=True)
        needs_review = [q for q in report if q.flags or not q.cleared]
        if needs_review:
            st.markdown("**Flagged or excluded raters**")
        for q in needs_review:
            with st.container(border=True):
                c1, c2, c3, c4 = st.columns([3, 4, 1.2, 1.2], vertical_alignment="bottom")
                state = "included" if q.cleared else "excluded from aggregation"
                c1.markdown(f"**{widgets.md_escape(q.username)}** · {state}  \n{', '.join(q.flags) or 'no flags now'}")
                note = c2.text_input("Note", key=f"q-note-{q.user_id}", placeholder="why (kept in the audit log)")
                if c3.button("Clear", key=f"q-clear-{q.user_id}", disabled=q.cleared and not q.flags):
                    em.quality.clear(q.user_id, note or "")
                    session.flash("success", f"{q.username} is cleared for aggregation.")
                    st.rerun()
                if c4.button("Exclude", key=f"q-exclude-{q.user_id}", disabled=not q.cleared):
                    em.quality.exclude(q.user_id, note or "")
                    session.flash("warning", f"{q.username} is excluded from aggregation.")
                    st.rerun()
    st.markdown("**Agreement: Krippendorff's alpha**")
    alphas = em.quality.agreement(campaign_id)
    if alphas:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "dimension": a.dimension,
                        "level": a.level,
                        "alpha": a.alpha,
                        "items (≥2 raters)": a.units,
                        "raters": a.raters,
                    }
                    for a in alphas
                ]
            ),
            hide_index=True,
        )
    else:
        st.caption("No judgments in this campaign yet.")
