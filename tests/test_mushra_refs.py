"""MUSHRA hidden reference and low anchor (ITU-R BS.1534-3) on real PostgreSQL.

TTS prompts whose reference has audio get the reference itself (hidden) and a 3.5 kHz low-pass
anchor planted among the rollouts; raters cannot tell which is which; the planted position
drives the hidden-reference screen (below 90 on more than 15% of items -> flagged, excluded).
"""

from __future__ import annotations

import uuid
from collections import Counter

import numpy as np
import pytest
from annotation_fixtures import make_user
from audio_util import tone
from sqlalchemy import func, select
from test_ui_app import ui  # noqa: F401  (the AppTest fixture: the app on committed PostgreSQL)

from earmark.audio import decode
from earmark.domain.enums import Role
from earmark.domain.records import RolloutCreate
from earmark.errors import InvalidInput, PermissionDenied
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Blob, Comparison, Judgment

SR = 16000
POLICY = "tts-walrus-9k"  # distinctive, so "not in the rater's view" is a meaningful search
ADMIN = Principal(None, "bootstrap", Role.admin)


def wideband(seconds: float = 0.6) -> np.ndarray:
    """A reference with energy below (500 Hz) and well above (6 kHz) the anchor's 3.5 kHz cut."""
    return (tone(seconds, SR, 500) + tone(seconds, SR, 6000)) / 2


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def seed(em, *, with_ref: int = 2, without_ref: int = 1, k: int = 3) -> dict:
    ref = em.blobs.put_waveform(wideband(), SR)
    prompts = [
        {
            "external_id": f"tts{i}",
            "regime": "tts",
            "messages": [{"role": "user", "content": f"Say line {i}."}],
            "reference": {"text": f"line {i}", "audio_sha256": ref.sha256},
        }
        for i in range(with_ref)
    ]
    prompts += [
        {"external_id": f"plain{i}", "regime": "tts", "messages": [{"role": "user", "content": f"Read {i}."}]}
        for i in range(without_ref)
    ]
    ids = em.catalog.import_prompts(prompts).ids
    pol = em.catalog.register_policy(POLICY, "file:///tts-ckpt")
    rows = []
    for pid in ids.values():
        for s in range(k):
            blob = em.blobs.put_waveform(tone(0.5 + 0.05 * s, SR, 200 + 30 * s), SR)
            rows.append(
                RolloutCreate(
                    prompt_id=pid,
                    policy_id=pol.id,
                    sample_index=s,
                    messages=[],
                    text=f"line rendered by sample {s}",
                    audio_sha256=blob.sha256,
                    duration_s=blob.duration_s,
                )
            )
    em.rollouts.ingest(rows)
    return {"ref": ref.sha256, "prompts": ids}


def create(em, name: str = "mushra-refs", overlap: int = 1):
    return em.as_principal(ADMIN).campaigns.create(
        CampaignCreate(name=name, protocol="mushra", overlap=overlap, gold_ratio=0.0, dimensions=[])
    )


def comparisons(em, campaign_id: int) -> list[Comparison]:
    with em.session() as s:
        return list(s.scalars(select(Comparison).where(Comparison.campaign_id == campaign_id).order_by(Comparison.id)))


def test_hidden_reference_and_low_anchor_are_planted(em) -> None:
    world = seed(em)
    camp = create(em)
    comps = comparisons(em, camp.id)
    planted = [c for c in comps if c.reason.get("planted")]
    plain = [c for c in comps if not c.reason.get("planted")]
    assert len(planted) == 2 and len(plain) == 1
    assert "hidden_reference" not in plain[0].reason and len(plain[0].rollout_ids) == 3
    anchors = set()
    for c in planted:
        n = len(c.rollout_ids)
        roles = [p["role"] for p in c.reason["planted"]]
        assert roles == ["hidden_reference", "anchor_low"]
        assert c.reason["hidden_reference"] == n and c.reason["anchors"] == [n + 1]
        assert c.reason["planted"][0]["audio_sha256"] == world["ref"]  # the reference clip itself
        anchors.add(c.reason["planted"][1]["audio_sha256"])
    assert len(anchors) == 1, "one anchor per reference clip"
    anchor = anchors.pop()
    assert anchor != world["ref"]

    # The anchor is the reference low-passed at 3.5 kHz: the 6 kHz part is gone, the 500 Hz part stays,
    # and it is sample-aligned with the reference (same rate, same length).
    ref_audio, ref_sr = decode(em.blobs.read(world["ref"]))
    anc_audio, anc_sr = decode(em.blobs.read(anchor))
    assert anc_sr == ref_sr == SR and len(anc_audio) == len(ref_audio)
    assert band_energy(anc_audio, 5000, 7000) < 1e-3 * band_energy(ref_audio, 5000, 7000)
    assert band_energy(anc_audio, 300, 700) == pytest.approx(band_energy(ref_audio, 300, 700), rel=0.05)
    with em.session() as s:
        row = s.scalar(select(Blob).where(Blob.sha256 == anchor))
    assert row.sample_rate == SR and row.channels == 1

    # Content-addressed: making it again (another campaign) gives the same blob, stored once.
    camp2 = create(em, "mushra-refs-again")
    again = {
        p["audio_sha256"]
        for c in comparisons(em, camp2.id)
        for p in c.reason.get("planted", [])
        if p["role"] == "anchor_low"
    }
    assert again == {anchor} and em.campaigns.low_anchor(world["ref"]) == anchor
    with em.session() as s:
        assert s.scalar(select(func.count()).select_from(Blob).where(Blob.sha256 == anchor)) == 1


def test_missing_reference_audio_is_refused_clearly(em) -> None:
    seed(em, with_ref=0)
    dangling = em.catalog.import_prompts(
        [
            {
                "external_id": "dangling",
                "regime": "tts",
                "messages": [{"role": "user", "content": "x"}],
                "reference": {"audio_sha256": "ab" * 32},
            }
        ]
    ).ids["dangling"]
    with em.session() as s:
        from earmark.store.models import Policy

        pol = s.scalar(select(Policy.id))
    em.rollouts.ingest(
        [RolloutCreate(prompt_id=dangling, policy_id=pol, sample_index=i, messages=[], text=f"t{i}") for i in range(3)]
    )
    with pytest.raises(InvalidInput, match=r"prompt 'dangling' names reference audio .* not in the store"):
        create(em)


def test_rater_view_is_blind_and_order_is_randomized(em) -> None:
    world = seed(em, with_ref=2, without_ref=0)
    camp = create(em, overlap=6)
    comps = {c.id: c for c in comparisons(em, camp.id)}
    shown_positions = Counter()
    for r in range(6):
        rater = em.as_principal(make_user(em, f"r{r}"))
        for lease in rater.tasks.claim(camp.id, want=2):
            comp = comps[lease.comparison_id]
            n = len(comp.rollout_ids)
            assert sorted(lease.order) == list(range(n + 2)), "the order covers rollouts and planted clips"
            shown_positions[lease.order.index(comp.reason["hidden_reference"])] += 1
            item = rater.tasks.item(lease)
            assert [s.label for s in item.stimuli] == ["A", "B", "C", "D", "E"]
            shas = [s.audio_sha256 for s in item.stimuli]
            assert world["ref"] in shas and comp.reason["planted"][1]["audio_sha256"] in shas
            assert all(s.transcript == "" for s in item.stimuli), "no transcript may single out a planted clip"
            view = repr(item).lower()
            for secret in ("hidden", "anchor", "planted", POLICY, "tts-ckpt", "rollout"):
                assert secret not in view, f"{secret!r} leaks into the rater's view"
            assert item.reference is not None and item.reference.audio_sha256 == world["ref"]
            assert rater.tasks.audio(item, "reference") == em.blobs.read(world["ref"])
            hidden_label = item.stimuli[lease.order.index(comp.reason["hidden_reference"])].label
            assert rater.tasks.audio(item, hidden_label) == em.blobs.read(world["ref"])
    assert sum(shown_positions.values()) == 12
    assert len(shown_positions) >= 2, f"hidden reference always shown at one position: {shown_positions}"


def _rate_all(em, camp_id: int, name: str, ref_score, *, ref_sha: str) -> None:
    """Rate every item: the hidden reference gets ref_score(i) (i counts reference items), others 40."""
    rater = em.as_principal(make_user(em, name))
    i = 0
    while leases := rater.tasks.claim(camp_id, want=1):
        le = leases[0]
        item = rater.tasks.item(le)
        scores = []
        for s in item.stimuli:
            if s.audio_sha256 == ref_sha and item.reference is not None:
                scores.append(ref_score(i))
            else:
                scores.append(40)
        i += item.reference is not None
        rater.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), {"mushra": scores, "listen_ms": {"A": 500}})


def test_screening_reads_the_planted_hidden_reference(em) -> None:
    world = seed(em, with_ref=7, without_ref=2)
    camp = create(em, overlap=3)
    _rate_all(em, camp.id, "careful", lambda i: 100 if i % 2 else 92, ref_sha=world["ref"])
    _rate_all(em, camp.id, "sloppy", lambda i: 60 if i < 2 else 95, ref_sha=world["ref"])  # 2 of 7 below 90
    _rate_all(em, camp.id, "edge", lambda i: 89 if i == 0 else 90, ref_sha=world["ref"])  # 1 of 7 = 14% < 15%

    with em.session() as s:
        stored = s.execute(
            select(Judgment.ratings, Comparison.reason)
            .join(Comparison, Comparison.id == Judgment.comparison_id)
            .where(Judgment.campaign_id == camp.id)
        ).all()
    with_ref = [(r, c) for r, c in stored if "hidden_reference" in c]
    assert len(with_ref) == 21 and all(len(r["mushra"]) == 5 for r, _ in with_ref)  # canonical: 3 + ref + anchor
    assert all(r["mushra"][c["anchors"][0]] == 40 for r, c in with_ref)

    rev = em.as_principal(make_user(em, "rev", Role.reviewer))
    report = {q.username: q for q in rev.quality.rater_report(camp.id)}
    assert (report["careful"].hidden_ref_items, report["careful"].hidden_ref_failures) == (7, 0)
    assert (report["sloppy"].hidden_ref_items, report["sloppy"].hidden_ref_failures) == (7, 2)
    assert (report["edge"].hidden_ref_items, report["edge"].hidden_ref_failures) == (7, 1)
    assert "hidden_reference" in report["sloppy"].flags
    assert "hidden_reference" not in report["careful"].flags and "hidden_reference" not in report["edge"].flags

    excluded = rev.quality.apply_hidden_reference_screen()
    assert [q.username for q in excluded] == ["sloppy"]
    assert em.users.find("sloppy").cleared_for_aggregation is False
    assert em.users.find("careful").cleared_for_aggregation is True
    assert rev.quality.apply_hidden_reference_screen() == []  # already excluded: nothing new
    rev.quality.clear(em.users.find("sloppy").id, "re-trained on the reference")
    assert rev.quality.apply_hidden_reference_screen() == [], "a reviewer's clearance stands without new evidence"

    with pytest.raises(PermissionDenied):
        em.as_principal(make_user(em, "nosy")).quality.apply_hidden_reference_screen()


def _ref_sha(em, campaign_id: int) -> str:
    return next(
        p["audio_sha256"]
        for c in comparisons(em, campaign_id)
        for p in c.reason.get("planted", [])
        if p["role"] == "hidden_reference"
    )


def test_reviewer_sees_which_clip_was_planted(em) -> None:
    seed(em, with_ref=1, without_ref=0)
    camp = create(em)
    _rate_all(em, camp.id, "rita", lambda i: 100, ref_sha=_ref_sha(em, camp.id))
    rev = em.as_principal(make_user(em, "rev", Role.reviewer))
    (comp,) = comparisons(em, camp.id)
    item = rev.review.item(comp.id)
    assert [s.label for s in item.stimuli] == ["A", "B", "C", "hidden ref", "low anchor"]
    (j,) = item.judgments
    assert sorted(j.shown_order) == sorted(["A", "B", "C", "hidden ref", "low anchor"])
    assert j.ratings["mushra"][comp.reason["hidden_reference"]] == 100


def test_rate_page_plays_the_reference_and_never_names_planted_clips(ui) -> None:  # noqa: F811
    from test_ui_app import app, login, page_text, report_played, shown

    from annotation_ui.rating_form import widget_key

    seed(ui, with_ref=1, without_ref=0)
    camp = create(ui)
    make_user(ui, "rita")
    at = report_played(login(app(), "rita"))
    item = shown(at)
    assert [s.label for s in item.stimuli] == ["A", "B", "C", "D", "E"]
    text_shown = page_text(at).lower()
    for secret in ("hidden", "anchor", "planted", POLICY, "low-pass", "3.5 khz"):
        assert secret not in text_shown, secret
    assert "**reference**" in text_shown and "against the reference" in text_shown
    audio = at.get("audio")
    assert len(audio) == 6, "the open reference plus five clips"
    for i, label in enumerate("ABCDE"):
        at.slider(key=widget_key(f"mushra-{label}", item.task_id)).set_value(10 * i)
    at.button(key=widget_key("submit", item.task_id)).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    with ui.session() as s:
        j = s.scalar(select(Judgment).where(Judgment.task_id == item.task_id))
        comp = s.get(Comparison, j.comparison_id)
    assert j.campaign_id == camp.id and len(j.ratings["mushra"]) == 5
    shown_ref = j.presentation["order"].index(comp.reason["hidden_reference"])
    assert j.ratings["mushra"][comp.reason["hidden_reference"]] == 10 * shown_ref


def test_agreement_leaves_out_the_planted_controls(em) -> None:
    world = seed(em, with_ref=3, without_ref=0)
    camp = create(em, overlap=2)
    # Both raters agree perfectly on the reference (100) and the anchor (40 via _rate_all), and
    # disagree on every system clip: alpha must reflect the systems, not the easy controls.
    for name, base in (("rita", 10), ("bob", 70)):
        rater = em.as_principal(make_user(em, name))
        while leases := rater.tasks.claim(camp.id, want=1):
            le = leases[0]
            item = rater.tasks.item(le)
            comp = next(c for c in comparisons(em, camp.id) if c.id == le.comparison_id)
            anchor = comp.reason["planted"][1]["audio_sha256"]
            scores = [
                100 if s.audio_sha256 == world["ref"] else 5 if s.audio_sha256 == anchor else base + i
                for i, s in enumerate(item.stimuli)
            ]
            rater.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), {"mushra": scores})
    rev = em.as_principal(make_user(em, "rev", Role.reviewer))
    (mushra,) = [a for a in rev.quality.agreement(camp.id) if a.dimension == "mushra"]
    assert mushra.units == 9, "3 items x 3 system clips; the reference and anchor are not units"
    assert mushra.alpha is not None and mushra.alpha < 0
