"""Rate: one blind item at a time, on a short lease that the page keeps alive while the rater works.

What a rater sees comes only from ``TaskService.item`` (``RaterItem``): clips labelled A, B, ...
in the task's randomized order, the persona card, the prompt and the instructions; no model,
policy, version, rollout id or score exists in that view, so none can be shown here. Timeline
tasks (duplex sessions) add ``TaskService.timeline``: both tracks on one clock, no identities.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import streamlit as st

from annotation_ui import listen, session, timeline, widgets
from annotation_ui.rating_form import rating_form
from earmark.errors import Conflict, EarmarkError, InvalidInput, LeaseExpired, NotFound

MAX_KEEPALIVE_S = 30 * 60  # stop renewing a lease the rater has left open this long without submitting

principal, em = session.page_guard("tasks.rate")


def _drop(release: bool) -> None:
    rate = st.session_state.pop("rate", None)
    if rate:
        timeline.clear(rate["item"].task_id)  # marked events belong to the item on screen only
    if release and rate:
        try:
            em.tasks.release(rate["lease"].task_id, rate["lease"].lease_token)
        except EarmarkError:
            pass  # an unreleased lease lapses on its own


def _load(campaign_id: int) -> dict[str, Any] | None:
    """The item on screen: renew its lease, or take the next one (already leased while the rater
    worked on this one: ``claim`` keeps two)."""
    rate = st.session_state.get("rate")
    if rate and rate["campaign_id"] != campaign_id:
        _drop(release=True)
        rate = None
    if rate:
        try:
            em.tasks.heartbeat(rate["lease"].task_id, rate["lease"].lease_token)
            return rate
        except LeaseExpired as exc:
            st.error(exc.message)
            _drop(release=False)
    leases = em.tasks.claim(campaign_id)
    if not leases:
        return None
    lease = leases[0]  # the oldest lease: the item prepared while the previous one was being rated
    item = em.tasks.item(lease)
    view, audio = None, {}
    if item.protocol == "timeline":  # the session's own tracks replace the per-stimulus clips
        view = em.tasks.timeline(item)
        audio = {timeline.MIX: em.tasks.timeline_audio(view, "stereo")}
        audio |= {t: em.tasks.timeline_audio(view, t) for t in timeline.TRACK_LABELS if view.track(t).audio_sha256}
    else:
        audio = {s.label: em.tasks.audio(item, s.label) for s in item.stimuli if s.audio_sha256}
        if item.reference is not None:
            audio["reference"] = em.tasks.audio(item, "reference")
    prompt_audio = {
        i: em.tasks.audio(item, f"prompt{i}") for i, t in enumerate(item.conversation) if t.get("audio_sha256")
    }
    rate = {
        "campaign_id": campaign_id,
        "lease": lease,
        "item": item,
        "audio": audio,
        "prompt_audio": prompt_audio,
        "timeline": view,
        # One id per displayed task: a double click or a rerun resubmits the same id, stored once.
        "submission_id": uuid.uuid4(),
        "shown_at": time.time(),
    }
    st.session_state["rate"] = rate
    return rate


@st.fragment(run_every=max(20, session.settings().lease_seconds // 3))
def _keepalive() -> None:
    """Renew the lease while the page is open, even if the rater only listens (no reruns)."""
    rate = st.session_state.get("rate")
    if not rate or time.time() - rate["shown_at"] > MAX_KEEPALIVE_S:
        return
    try:
        em.tasks.heartbeat(rate["lease"].task_id, rate["lease"].lease_token)
    except LeaseExpired as exc:
        session.flash("error", exc.message)
        _drop(release=False)
        st.rerun(scope="app")
    except EarmarkError:
        pass  # a transient store error: the next heartbeat tries again


head, pick = st.columns([3, 2], vertical_alignment="bottom")
head.title("Rate")
session.show_flashes()
campaigns = em.campaigns.list(status="open")
if not campaigns:
    st.info("No campaign is open for rating right now. Check back later.")
    st.stop()
names = {c.id: c.name for c in campaigns}
campaign_id = pick.selectbox("Campaign", list(names), format_func=lambda i: names[i], key="rate-campaign")

rate, loaded = None, False
with session.service_errors("load the next item"):
    rate, loaded = _load(campaign_id), True
if rate is None:
    if loaded:  # (otherwise service_errors has already said what went wrong)
        st.success("Nothing left to rate in this campaign. Thank you!")
    st.stop()

item = rate["item"]
task_id = item.task_id
_keepalive()

with st.sidebar:
    done = st.session_state.get("rated_count", 0)
    st.caption(f"Rated in this session: {done}")

# -- context: instructions, persona, prompt -------------------------------------------------------
if item.instructions:
    with st.expander("Instructions", expanded=st.session_state.get("rated_count", 0) == 0):
        st.markdown(widgets.md_escape(item.instructions))
left, right = st.columns([2, 3], gap="medium")
with left:
    widgets.persona_card(item.persona)
with right:
    widgets.conversation(item.conversation, lambda i: rate["prompt_audio"].get(i))

# -- clips -------------------------------------------------------------------------------------------
view = rate.get("timeline")
if view is not None:
    st.markdown("#### Listen to the session")
    timeline.chart(view, rate["audio"], timeline.marked(task_id))
    unplayed, reports = timeline.players(task_id, view, rate["audio"])
    must_play = [lb for lb in rate["audio"]]
    timeline.event_editor(task_id, view)
    clip_stimuli = []
else:
    must_play = [s.label for s in item.stimuli if s.audio_sha256]
    reports = listen.track(task_id, must_play)
    durations = {
        s.label: s.duration_s or widgets.envelope(rate["audio"][s.label])[3] for s in item.stimuli if s.audio_sha256
    }
    unplayed = [lb for lb in must_play if not listen.is_played(reports.get(lb), durations.get(lb))]
    clip_stimuli = item.stimuli
    st.markdown("#### Listen to every clip")
    if item.reference is not None:
        with st.container(border=True):
            st.markdown(
                f"**Reference** · {widgets.duration_label(item.reference.duration_s)} · "
                "score each clip below against it"
            )
            st.audio(rate["audio"]["reference"], format="audio/wav")

for col, stim in zip(st.columns(len(clip_stimuli), gap="medium") if clip_stimuli else [], clip_stimuli):
    with col, st.container(key=listen.clip_key(task_id, stim.label), border=True):
        status = ":orange-badge[not played yet]" if stim.label in unplayed else ":green-badge[:material/check: played]"
        st.markdown(f"**Clip {stim.label}** · {widgets.duration_label(durations.get(stim.label))} · {status}")
        if stim.audio_sha256:
            st.audio(rate["audio"][stim.label], format="audio/wav")
            widgets.waveform(rate["audio"][stim.label])
        else:
            st.caption("This response has no audio; judge its text.")
        if stim.transcript:
            with st.expander("Transcript", expanded=not stim.audio_sha256):
                st.markdown(widgets.md_escape(stim.transcript))

# -- the form ----------------------------------------------------------------------------------------
outcome = rating_form(item, unplayed)
if st.button(
    "Skip this item", help="Return it to the pool for another rater and load the next one.", key=f"skip-{task_id}"
):
    _drop(release=True)
    session.flash("info", "Skipped; here is the next item.")
    st.rerun()

if outcome.submitted:
    if unplayed:  # the button was disabled; a stale page could still send the click
        st.error(
            "Play the whole session to the end before submitting."
            if view is not None
            else f"Play {', '.join(unplayed)} to the end before submitting."
        )
    elif outcome.missing:
        st.error("Please answer: " + "; ".join(outcome.missing) + ".")
    else:
        answer = {**outcome.answer, "listen_ms": listen.listen_ms(reports, must_play)}
        if view is not None:
            answer["events"] = timeline.for_submit(task_id)
        try:
            result = em.tasks.submit(task_id, rate["lease"].lease_token, rate["submission_id"], answer)
        except InvalidInput as exc:
            st.error(f"Your answer was not saved: {exc.message}")
        except (LeaseExpired, Conflict, NotFound) as exc:
            session.flash("error", exc.message)
            _drop(release=False)
            st.rerun()
        except EarmarkError as exc:
            st.error(f"Your answer was not saved ({exc.message}); press Submit again.")
        else:
            st.session_state["rated_count"] = st.session_state.get("rated_count", 0) + 1
            timeline.clear(task_id)
            session.flash(
                "success",
                "Saved. Here is the next item."
                if not result.late
                else "Saved (your lease had lapsed, but nobody else had taken the item).",
            )
            _drop(release=False)
            st.rerun()
