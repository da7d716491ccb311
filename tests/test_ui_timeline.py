"""Timeline annotation of duplex sessions: AppTest from the router against real PostgreSQL.

The duplex session is built with the domain model (``earmark.domain.duplex.Timeline``) over real
audio blobs: tones where each side speaks, silence elsewhere, so both tracks are session-aligned.
The rollout carries it as ``rollouts.timeline`` the way duplex rollouts do.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict

import numpy as np
import pytest
from annotation_fixtures import make_user
from audio_util import tone
from sqlalchemy import func, select, text
from test_ui_app import ADMIN, app, button, login, page_text, shown, ui  # noqa: F401  (ui is a fixture)

from annotation_ui import listen, timeline
from annotation_ui.rating_form import widget_key
from earmark.audio import decode
from earmark.domain.duplex import Action, AudioTrack, LabelledEvent, Span, Timeline
from earmark.domain.enums import Role
from earmark.domain.messages import ToolCall
from earmark.domain.records import RolloutCreate
from earmark.errors import InvalidInput, LeaseExpired, NotFound, PermissionDenied
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Judgment

SR = 16000
POLICY = "duplex-narwhal-q3"  # distinctive, so "never rendered" is a meaningful search
N_CHUNKS = 32  # 32 x 160 ms = 5.12 s
DURATION = 5.12


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SR)), dtype=np.float32)


def seed_duplex(em, n_sessions: int = 1) -> dict:
    """Duplex prompts with one rollout each: the user speaks 0-1.6 s and 3.2-4.0 s, the assistant
    1.92-3.52 s (talking over the user's second turn), with a response label and a tool call."""
    user = np.concatenate([tone(1.6, SR, 200), _silence(1.6), tone(0.8, SR, 200), _silence(1.12)])
    assistant = np.concatenate([_silence(1.92), tone(1.6, SR, 330), _silence(1.6)])
    ub, ab = em.blobs.put_waveform(user, SR), em.blobs.put_waveform(assistant, SR)
    tl = Timeline(
        n_chunks=N_CHUNKS,
        user=AudioTrack(
            audio_sha256=ub.sha256,
            transcript="What's the weather in <b>Paris</b>?",
            speech=[Span(start=0, end=10), Span(start=20, end=25)],
        ),
        assistant=AudioTrack(
            audio_sha256=ab.sha256, transcript="Let me check that for you.", speech=[Span(start=12, end=22)]
        ),
        actions=[
            Action(chunk=12, label="response", plan="answer the weather question"),
            Action(chunk=14, tool_calls=[ToolCall(name="get_weather", arguments={"city": "Paris"})]),
        ],
        events=[LabelledEvent(type="normal", onset_s=1.6, note="GROUND-TRUTH-SECRET")],
        scenario="normal",
        meta={"policy": POLICY, "generator": "scenario-gen v0"},
    )
    ids = em.catalog.import_prompts(
        [
            {"external_id": f"duplex{i}", "regime": "duplex", "messages": [{"role": "user", "content": "(live call)"}]}
            for i in range(n_sessions)
        ]
    ).ids
    pol = em.catalog.register_policy(POLICY, "file:///duplex-ckpt")
    em.rollouts.ingest(
        [
            RolloutCreate(
                prompt_id=pid,
                policy_id=pol.id,
                sample_index=0,
                messages=[],
                text="Let me check that for you.",
                audio_sha256=ab.sha256,
                duration_s=ab.duration_s,
                timeline=tl.to_json(),
            )
            for pid in ids.values()
        ]
    )
    return {"user": ub.sha256, "assistant": ab.sha256, "prompts": ids}


def timeline_campaign(em, *, overlap: int = 1, n_sessions: int = 1, name: str = "duplex-events"):
    seed_duplex(em, n_sessions)
    return em.as_principal(ADMIN).campaigns.create(
        CampaignCreate(
            name=name,
            protocol="timeline",
            overlap=overlap,
            gold_ratio=0.0,
            dimensions=["prosody"],
            regime="duplex",
            instructions="Mark every <moment> the assistant **misbehaves**.",
        )
    )


def add_event(at, kind: str | None, onset: str, note: str = ""):
    tid = shown(at).task_id
    if kind is not None:
        at.selectbox(key=timeline.field_key("kind", tid)).set_value(kind)
    at.text_input(key=timeline.field_key("onset", tid)).input(onset)
    if note:
        at.text_input(key=timeline.field_key("note", tid)).input(note)
    return at.button(key=timeline.field_key("add-button", tid)).click().run()


def report_session_played(at):
    tid = shown(at).task_id
    at.session_state[listen.tracker_key(tid)] = {
        "listened": {
            timeline.MIX: {"covered_ms": int(DURATION * 1000), "played_ms": int(DURATION * 1000) + 30, "ended": True}
        }
    }
    return at.run()


def charts(at) -> list:
    return at.get("vega_lite_chart")


def test_rater_marks_an_event_and_it_lands_with_its_onset(ui) -> None:
    camp = timeline_campaign(ui)
    rita = make_user(ui, "rita")
    at = login(app(), "rita")
    assert not at.exception
    item = shown(at)
    tid = item.task_id
    assert item.protocol == "timeline"
    assert at.button(key=widget_key("submit", tid)).disabled, "submit waits until the session was heard"
    assert len(charts(at)) == 1, "both tracks drawn on one time axis"

    shown_text = page_text(at)
    for secret in (POLICY, "duplex-ckpt", "scenario-gen", "GROUND-TRUTH-SECRET"):
        assert secret not in shown_text
    chart = charts(at)[0].proto
    blob = chart.spec.encode() + b"".join(d.data.data for d in chart.datasets)
    assert POLICY.encode() not in blob and b"GROUND-TRUTH-SECRET" not in blob
    assert b"get_weather" in blob and b"response" in blob, "the action channel is drawn"
    assert r"Mark every \<moment\> the assistant \*\*misbehaves\*\*\." in shown_text  # escaped, not rendered

    at = add_event(at, "late_response", "2.4", note="waited <too> long")
    assert not at.error, [e.value for e in at.error]
    at = add_event(at, "wrong_tool_call", "0:03.1")
    events = at.session_state[timeline.events_key(tid)]
    assert [(e["kind"], e["onset_s"]) for e in events] == [("late_response", 2.4), ("wrong_tool_call", 3.1)]
    listed = page_text(at)
    assert "**2.40 s**" in listed and "**3.10 s**" in listed and r"waited \<too\> long" in listed
    assert at.text_input(key=timeline.field_key("onset", tid)).value == "", "the add form starts blank again"

    # remove the second one again: only what is listed at submit is stored
    second = events[1]["id"]
    at.button(key=f"tl-del-{second}-{tid}").click().run()
    assert [e["kind"] for e in at.session_state[timeline.events_key(tid)]] == ["late_response"]

    at = report_session_played(at)
    assert not at.button(key=widget_key("submit", tid)).disabled
    at.radio(key=widget_key("dim-prosody", tid)).set_value(3)
    at.text_area(key=widget_key("rationale", tid)).input("answered over the user")
    at.button(key=widget_key("submit", tid)).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Saved your answer" in at.success[0].value
    with ui.session() as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == tid))
    assert (j.rater_id, j.campaign_id, j.protocol) == (rita.user_id, camp.id, "timeline")
    assert j.events == [{"kind": "late_response", "onset_s": 2.4, "note": "waited <too> long"}]
    assert j.ratings == {"prosody": 3} and j.rationale == "answered over the user"
    assert j.listen_ms[timeline.MIX] > 0


@pytest.mark.parametrize(
    "onset, message",
    [
        ("-1", "is before the session starts"),
        ("6", "is after the session ends at 5.12 s"),
        ("5.2", "is after the session ends at 5.12 s"),
        ("nan", "is not a finite number of seconds"),
        ("inf", "is not a finite number of seconds"),
        ("soon", "is not a time; enter seconds such as 2.4"),
        ("", "enter the onset time in seconds"),
    ],
)
def test_bad_onsets_are_refused_with_a_clear_message(ui, onset: str, message: str) -> None:
    timeline_campaign(ui)
    make_user(ui, "rita")
    at = login(app(), "rita")
    tid = shown(at).task_id
    at = add_event(at, "bad_interruption", onset)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The event was not added:") and message in errors[0], errors
    assert at.session_state[timeline.events_key(tid)] == []
    assert at.text_input(key=timeline.field_key("onset", tid)).value == onset, "the rater's input is kept to fix"
    with ui.session() as s:
        assert s.scalar(text("SELECT count(*) FROM judgments")) == 0


def test_event_needs_a_kind(ui) -> None:
    timeline_campaign(ui)
    make_user(ui, "rita")
    at = add_event(login(app(), "rita"), None, "1.0")
    assert "pick what went wrong" in at.error[0].value


def test_service_refuses_onsets_outside_the_session_and_stores_nothing(ui) -> None:
    camp = timeline_campaign(ui)
    rater = ui.as_principal(make_user(ui, "rita"))
    lease = rater.tasks.claim(camp.id, want=1)[0]
    base = {"ratings": {"prosody": 4}, "listen_ms": {"mix": 5200}}
    for bad, match in (
        (
            {"kind": "late_response", "onset_s": 5.5},
            r"event 1 \(late_response\): the onset 5.50 s is "
            r"after the session ends at 5.12 s",
        ),
        ({"kind": "late_response", "onset_s": -0.1}, "onset_s"),
        ({"kind": "late_response", "onset_s": float("nan")}, "onset_s"),
        ({"kind": "shouting", "onset_s": 1.0}, "kind"),
    ):
        with pytest.raises(InvalidInput, match=match):
            rater.tasks.submit(lease.task_id, lease.lease_token, uuid.uuid4(), {**base, "events": [bad]})
    with ui.session() as s:
        assert s.scalar(select(func.count()).select_from(Judgment)) == 0
    ok = rater.tasks.submit(
        lease.task_id,
        lease.lease_token,
        uuid.uuid4(),
        {**base, "events": [{"kind": "bad_interruption", "onset_s": DURATION, "note": "at the end"}]},
    )
    with ui.session() as s:
        assert s.get(Judgment, ok.judgment_id).events == [
            {"kind": "bad_interruption", "onset_s": DURATION, "note": "at the end"}
        ]


def test_timeline_view_is_blind_and_stereo_puts_user_left(ui) -> None:
    camp = timeline_campaign(ui)
    world_user = ui.blobs.read(ui.rollouts.list()[0].timeline["user"]["audio_sha256"])
    rater = ui.as_principal(make_user(ui, "rita"))
    item = rater.tasks.item(rater.tasks.claim(camp.id, want=1)[0])
    view = rater.tasks.timeline(item)
    dumped = json.dumps(asdict(view))
    for secret in (POLICY, "scenario-gen", "GROUND-TRUTH-SECRET", "meta", "scenario"):
        assert secret not in dumped
    assert (view.n_chunks, view.chunk_ms, view.duration_s) == (N_CHUNKS, 160, pytest.approx(DURATION))
    assert [x for span in view.user.speech for x in span] == pytest.approx([0.0, 1.6, 3.2, 4.0])
    assert [(a.t_s, a.label) for a in view.actions] == [(pytest.approx(1.92), "response"), (pytest.approx(2.24), None)]
    assert view.actions[1].tool_calls == [{"name": "get_weather", "arguments": {"city": "Paris"}}]

    stereo, sr = decode(rater.tasks.timeline_audio(view, "stereo"))
    assert stereo.shape == (round(DURATION * SR), 2) and sr == SR
    user, _ = decode(world_user)
    left_on = np.abs(stereo[:, 0]) > 0.05
    right_on = np.abs(stereo[:, 1]) > 0.05
    assert left_on[: int(1.5 * SR)].mean() > 0.5 and not left_on[int(1.7 * SR) : int(3.1 * SR)].any()
    assert not right_on[: int(1.9 * SR)].any() and right_on[int(2.0 * SR) : int(3.4 * SR)].mean() > 0.5
    assert np.allclose(stereo[: len(user), 0], user, atol=1e-3)
    with pytest.raises(NotFound, match="track 'meta' does not exist"):
        rater.tasks.timeline_audio(view, "meta")

    # Role and lease checks: only the rater holding the lease sees the session through the rater
    # view; reviewers use their own (role-checked) view; engineers have no annotation view at all.
    with pytest.raises(LeaseExpired):
        ui.as_principal(make_user(ui, "bob")).tasks.timeline(item)
    with pytest.raises(PermissionDenied):
        ui.as_principal(make_user(ui, "eng", Role.engineer)).tasks.timeline(item)
    with pytest.raises(PermissionDenied):
        rater.review.timeline(1)
    with ui.session() as s:
        comp_id = s.scalar(text("SELECT id FROM comparisons WHERE campaign_id = :c"), {"c": camp.id})
    assert ui.as_principal(make_user(ui, "rev", Role.reviewer)).review.timeline(comp_id) == view


def test_timeline_campaign_needs_duplex_sessions(ui) -> None:
    from annotation_fixtures import seed_rollouts

    seed_rollouts(ui, n_prompts=2)
    with pytest.raises(InvalidInput, match="no rollout in the selection carries a duplex timeline"):
        ui.as_principal(ADMIN).campaigns.create(CampaignCreate(name="t", protocol="timeline"))


def test_admin_creates_a_timeline_campaign(ui) -> None:
    seed_duplex(ui, 2)
    make_user(ui, "ada", Role.admin)
    at = login(app(), "ada")
    at.switch_page("app_pages/admin.py").run()
    at.segmented_control(key="admin-section").set_value("Campaigns").run()
    assert "timeline" in at.selectbox(key="camp-protocol").options
    at.text_input(key="camp-name").input("duplex round")
    at.selectbox(key="camp-protocol").set_value("timeline")
    at.selectbox(key="camp-regime").set_value("duplex")
    button(at, "Create campaign").click().run()
    assert not at.exception and any("duplex round" in s.value for s in at.success), [e.value for e in at.error]
    with ui.session() as s:
        assert s.execute(
            text(
                "SELECT protocol, (SELECT count(*) FROM comparisons c WHERE c.campaign_id = k.id) "
                "FROM campaigns k WHERE name = 'duplex round'"
            )
        ).one() == ("timeline", 2)


def test_reviewer_sees_each_raters_events_side_by_side(ui) -> None:
    camp = timeline_campaign(ui, overlap=2)
    for name, events in (
        ("rita", [{"kind": "late_response", "onset_s": 2.4, "note": "slow <b>"}]),
        ("bob", [{"kind": "bad_interruption", "onset_s": 3.3, "note": ""}]),
    ):
        rater = ui.as_principal(make_user(ui, name))
        le = rater.tasks.claim(camp.id, want=1)[0]
        rater.tasks.submit(
            le.task_id,
            le.lease_token,
            uuid.uuid4(),
            {"ratings": {"prosody": 3}, "listen_ms": {"mix": 5200}, "events": events},
        )
    make_user(ui, "rev", Role.reviewer)
    at = login(app(), "rev")
    at.switch_page("app_pages/review.py").run()
    assert not at.exception, at.exception
    disputed = next(df.value for df in at.dataframe if "disagreement" in df.value.columns)
    assert disputed["disagreement"].tolist() == [1.0]  # no shared event
    assert "late_response 1" in disputed["summary"][0] and "bad_interruption 1" in disputed["summary"][0]
    shown_text = page_text(at)
    assert "**rita**" in shown_text and "**bob**" in shown_text
    assert r"2.40 s · Late response — slow \<b\>" in shown_text  # the note is escaped, not rendered
    assert "3.30 s · Bad interruption (the assistant cut in)" in shown_text.replace("\\", "")
    assert POLICY not in shown_text
    assert len(charts(at)) >= 1
