"""Rate: one blind item at a time, on a short lease that the page keeps alive while the rater works.

The campaign box opens on a campaign with work left for this rater; progress (done, left for me,
left in the campaign) comes from the store, so it survives reloads. The item on screen is named in
the URL (``?item=<task>``) and its lease is kept: a reload (the signed session cookie logs back in)
shows the same item. Skip records the skip, so the item goes to other raters. Submit saves in the
button's callback, before the one rerun that shows the next item. Admins and reviewers lease
nothing until they choose to rate.

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

from annotation_ui import browser, listen, session, timeline, timing, widgets
from annotation_ui.rating_form import CHOICE_LABELS, STRENGTH_LABELS, collect, dimensions_of, rating_form, widget_key
from earmark.domain.enums import Role
from earmark.errors import Conflict, EarmarkError, InvalidInput, LeaseExpired, NotFound, StoreUnavailable

MAX_KEEPALIVE_S = 30 * 60  # stop renewing a lease the rater has left open this long without submitting
RENEWED_RECENTLY_S = 5.0  # a rerun within this long of the last renewal does not renew again

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
            _renew(rate)
            return rate
        except LeaseExpired as exc:
            st.error(exc.message)
            _drop(release=False)
    leases = em.tasks.claim(campaign_id)
    if not leases:
        return None
    # after a reload, the item that was on screen (named in the URL); else the oldest lease: the
    # item prepared while the previous one was being rated
    wanted = st.query_params.get("item")
    lease = next((le for le in leases if str(le.task_id) == wanted), leases[0])
    st.query_params["item"] = str(lease.task_id)
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
        "renewed_at": 0.0,  # a lease held since earlier (the prepared next one): the next rerun renews it
    }
    st.session_state["rate"] = rate
    return rate


def _renew(rate: dict[str, Any]) -> None:
    """Heartbeat the lease, unless a rerun a moment ago already did (the listen tracker's reports
    and the keepalive come in bursts); LeaseExpired when it was lost."""
    if time.monotonic() - rate.get("renewed_at", 0.0) < RENEWED_RECENTLY_S:
        return
    em.tasks.heartbeat(rate["lease"].task_id, rate["lease"].lease_token)
    rate["renewed_at"] = time.monotonic()


@st.fragment(run_every=max(20, session.settings().lease_seconds // 3))
def _keepalive() -> None:
    """Renew the lease while the page is open, even if the rater only listens (no reruns)."""
    rate = st.session_state.get("rate")
    if not rate or time.time() - rate["shown_at"] > MAX_KEEPALIVE_S:
        return
    try:
        _renew(rate)
    except LeaseExpired as exc:
        session.flash("error", exc.message)
        _drop(release=False)
        st.rerun(scope="app")
    except EarmarkError:
        pass  # a transient store error: the next heartbeat tries again


def _submit(rate: dict[str, Any], must_play: list[str], unplayed: list[str], view: Any) -> None:
    """The Submit button's callback: runs before the rerun, so a saved answer shows the next item at once."""
    item = rate["item"]
    task_id = item.task_id
    errors: dict[str, str] = {}
    answer, missing = collect(item)
    if unplayed:  # the button was disabled; a stale page could still send the click
        errors["submit"] = (
            "Play the whole session to the end before submitting."
            if view is not None
            else f"Play {', '.join(unplayed)} to the end before submitting."
        )
    elif missing:
        errors.update(missing)
        errors["submit"] = f"{len(missing)} answer(s) missing: see the messages above."
    else:
        reports = st.session_state.get("_reports", {})
        answer = {
            **answer,
            "listen_ms": listen.listen_ms(reports, must_play),
            "playback_rate": listen.playback_rates(reports, must_play),
        }
        if view is not None:
            answer["events"] = timeline.for_submit(task_id)
        try:
            result = em.tasks.submit(task_id, rate["lease"].lease_token, rate["submission_id"], answer)
        except InvalidInput as exc:
            errors["submit"] = f"Your answer was not saved: {exc.message}"
        except (LeaseExpired, Conflict, NotFound) as exc:
            session.flash("error", exc.message)
            _drop(release=False)
        except EarmarkError as exc:
            errors["submit"] = f"Your answer was NOT saved ({exc.message}); press Submit again."
        else:
            timeline.clear(task_id)
            session.flash(
                "success",
                f"Saved your answer to item #{task_id}."
                if not result.late
                else f"Saved item #{task_id} (your lease had lapsed, but nobody else had taken the item).",
            )
            _drop(release=False)
            st.query_params.pop("item", None)
    st.session_state["rate_errors"] = {task_id: errors} if errors else {}


def _skip(rate: dict[str, Any]) -> None:
    try:
        em.rating.skip(rate["lease"].task_id, rate["lease"].lease_token)
        session.flash("info", f"Skipped item #{rate['item'].task_id}; it goes to other raters.")
    except EarmarkError:
        session.flash("info", "Skipped.")  # the lease had lapsed: nothing to give back
    _drop(release=False)
    st.query_params.pop("item", None)


def _hotkey_spec(item: Any, task_id: int, clip_labels: list[str]) -> dict[str, Any]:
    play_keys = "qwer"
    return {
        "play": {play_keys[i]: listen.clip_key(task_id, lb) for i, lb in enumerate(clip_labels[:4])},
        "choice": {
            "a": CHOICE_LABELS["A"],
            "b": CHOICE_LABELS["B"],
            "t": CHOICE_LABELS["tie"],
            "x": CHOICE_LABELS["both_bad"],
        }
        if item.protocol == "pairwise"
        else {},
        "choice_box": f"st-key-{widget_key('choice', task_id)}",
        "strength": {"s": STRENGTH_LABELS[1], "c": STRENGTH_LABELS[2], "m": STRENGTH_LABELS[3]}
        if item.protocol == "pairwise"
        else {},
        "strength_box": f"st-key-{widget_key('strength', task_id)}",
        "dimension_boxes": [f"st-key-{widget_key(f'dim-{d}', task_id)}" for d in dimensions_of(item)],
    }


st.title("Rate")
session.show_flashes()

if principal.role != Role.rater and not st.session_state.get("rate-opt-in"):
    # admins and reviewers lease nothing just by landing here
    st.info(
        "You are signed in as a " + session.role_label(principal.role).lower() + ". Rating takes items from the pool."
    )
    if st.button("Start rating", type="primary", key="rate-opt-in-button"):
        st.session_state["rate-opt-in"] = True
        st.rerun()
    st.stop()


@st.fragment
def _rate_area() -> None:
    """Everything that changes from one item to the next. Submit, Skip, the listen tracker's
    reports and the campaign box rerun only this fragment, not the router, the navigation and the
    sidebar (issue 18: submit to next item playable); the account is re-checked on each of them."""
    with timing.timed("rate-item"):
        if session.fragment_guard(principal, "tasks.rate"):
            session.show_flashes()
            _rate_area_body()


def _rate_area_body() -> None:
    try:
        choices = em.rating.campaigns()
    except StoreUnavailable as exc:
        st.error(f"The preference store is unreachable ({exc.message}); reload the page in a moment.")
        return
    if not choices:
        st.info("No campaign is open for you right now. Check back later.")
        return
    names = {c.id: c.name for c in choices}
    left = {c.id: c.left_for_me for c in choices}
    if st.session_state.get("rate-campaign") not in names:
        st.session_state["rate-campaign"] = choices[0].id  # a campaign with work for this rater first
    campaign_id = st.selectbox(
        "Campaign",
        list(names),
        format_func=lambda i: f"{names[i]} · {left[i]} left for you",
        key="rate-campaign",
    )

    rate, loaded = None, False
    with session.service_errors("load the next item"):
        rate, loaded = _load(campaign_id), True
    progress = None
    with session.service_errors("read your progress"):
        progress = em.rating.progress(campaign_id)
    if progress is not None:
        saved = (
            f" · last answer saved: item #{progress.last_saved_task} at {progress.last_saved_at:%H:%M:%S} UTC"
            if progress.last_saved_at
            else ""
        )
        st.markdown(
            f":material/task_alt: **{progress.done_by_me}** done · **{progress.left_for_me}** left for you · "
            f"**{progress.left_in_campaign}** left in campaign{saved}",
            help="Done: your saved answers in this campaign. Left for you: items you may still rate.",
        )
    if st.session_state.pop(session.RESTORED_KEY, False) and progress is not None:
        state = (
            f"Your last saved answer is item #{progress.last_saved_task} ({progress.last_saved_at:%H:%M:%S} UTC)."
            if progress.last_saved_task
            else "No answer of yours is saved in this campaign yet."
        )
        if rate is not None:
            state += f" Item #{rate['item'].task_id} below is not saved yet."
        st.info(f"Welcome back. {state}", icon=":material/restore:")
    if rate is None:
        if loaded:  # (otherwise service_errors has already said what went wrong)
            st.success("Nothing left for you to rate in this campaign. Thank you!")
            others = [c for c in choices if c.id != campaign_id and c.left_for_me > 0]
            if others:
                st.info(
                    "Other campaigns have work for you: "
                    + ", ".join(f"{widgets.md_escape(c.name)} ({c.left_for_me})" for c in others)
                    + ". Pick one in the Campaign box."
                )
        return

    item = rate["item"]
    task_id = item.task_id
    st.caption(f"Item #{task_id}")

    # -- context: instructions, persona, prompt -------------------------------------------------------
    if item.instructions:
        with st.expander("Instructions", expanded=progress is not None and progress.done_by_me == 0):
            st.markdown(widgets.md_escape(item.instructions))
    left_col, right_col = st.columns([2, 3], gap="medium")
    with left_col:
        widgets.persona_card(item.persona)
    with right_col:
        widgets.conversation(item.conversation, lambda i: rate["prompt_audio"].get(i))

    # -- clips -------------------------------------------------------------------------------------------
    min_real = session.settings().listen_min_real_fraction
    view = rate.get("timeline")
    if view is not None:
        st.markdown("#### Listen to the session")
        timeline.chart(view, rate["audio"], timeline.marked(task_id))
        unplayed, reports = timeline.players(task_id, view, rate["audio"])
        must_play = [lb for lb in rate["audio"]]
        timeline.event_editor(task_id, view)
        clip_stimuli = []
        clip_labels: list[str] = []
    else:
        must_play = [s.label for s in item.stimuli if s.audio_sha256]
        reports = listen.track(task_id, must_play)
        durations = {
            s.label: s.duration_s or widgets.envelope(rate["audio"][s.label])[3] for s in item.stimuli if s.audio_sha256
        }
        unplayed = [lb for lb in must_play if not listen.is_played(reports.get(lb), durations.get(lb), min_real)]
        clip_stimuli = item.stimuli
        clip_labels = must_play
        st.markdown("#### Listen to every clip")
        if item.reference is not None:
            with st.container(border=True):
                st.markdown(
                    f"**Reference** · {widgets.duration_label(item.reference.duration_s)} · "
                    "score each clip below against it"
                )
                st.audio(rate["audio"]["reference"], format="audio/wav")
    st.session_state["_reports"] = reports

    keys = "QWER"
    for col, stim in zip(st.columns(len(clip_stimuli), gap="medium") if clip_stimuli else [], clip_stimuli):
        with col, st.container(key=listen.clip_key(task_id, stim.label), border=True):
            status = (
                ":orange-badge[not played yet]" if stim.label in unplayed else ":green-badge[:material/check: played]"
            )
            key_hint = f" · key {keys[clip_labels.index(stim.label)]}" if stim.label in clip_labels[:4] else ""
            st.markdown(
                f"**Clip {stim.label}** · {widgets.duration_label(durations.get(stim.label))} · {status}{key_hint}"
            )
            if stim.audio_sha256:
                st.audio(rate["audio"][stim.label], format="audio/wav")
                widgets.waveform(rate["audio"][stim.label])
            else:
                st.caption("This response has no audio; judge its text.")
            if stim.transcript:
                with st.expander("Transcript", expanded=not stim.audio_sha256):
                    st.markdown(widgets.md_escape(stim.transcript))

    browser.hotkeys(_hotkey_spec(item, task_id, clip_labels), task_id)
    st.caption(
        "Keys: "
        + " · ".join(f"{keys[i]} play/pause {lb}" for i, lb in enumerate(clip_labels[:4]))
        + (" · A / B / T (same) / X (both bad) choose · S / C / M how much" if item.protocol == "pairwise" else "")
        + " · 1-5 rate · Ctrl+Enter submit"
    )

    # -- the form ----------------------------------------------------------------------------------------
    if view is not None:
        note = "Play the whole session (or both tracks) to the end to enable Submit."
    elif min_real > 0:
        note = (
            f"Play {' and '.join(f'clip {x}' for x in unplayed)} to the end to enable Submit "
            f"(at most {1 / min_real:.3g}x speed counts)."
        )
    else:
        note = f"Play {' and '.join(f'clip {x}' for x in unplayed)} to the end to enable Submit."
    errors = st.session_state.get("rate_errors", {}).get(task_id, {})
    rating_form(item, unplayed, errors, on_submit=lambda: _submit(rate, must_play, unplayed, view), unplayed_note=note)
    st.button(
        "Skip this item",
        help="Give it to another rater (you will not see it again) and load the next one.",
        key=f"skip-{task_id}",
        on_click=_skip,
        args=(rate,),
    )


_keepalive()
_rate_area()
