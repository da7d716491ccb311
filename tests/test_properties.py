"""Property-based tests (hypothesis): import schemas, presentation-order canonicalization, vote
aggregation and preference-pair construction."""

from __future__ import annotations

import json
import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from earmark.domain.annotation import JudgmentSubmit, canonical
from earmark.domain.enums import Protocol
from earmark.domain.records import PromptCreate
from earmark.services.labels import _vote

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=200)
roles = st.sampled_from(["system", "user", "assistant"])
message = st.fixed_dictionaries({"role": roles, "content": text})


@given(
    ext=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,30}", fullmatch=True),
    regime=st.sampled_from(["asr", "tts", "realtime", "duplex", "reasoning"]),
    messages=st.lists(message, min_size=1, max_size=8),
)
def test_prompt_schema_round_trips_through_json(ext, regime, messages) -> None:
    p = PromptCreate(external_id=ext, regime=regime, messages=messages)
    again = PromptCreate.model_validate(json.loads(p.model_dump_json()))
    assert again == p


@given(st.dictionaries(st.text(max_size=10), st.one_of(st.integers(), text, st.none()), max_size=5))
def test_prompt_schema_rejects_arbitrary_dicts_cleanly(obj) -> None:
    try:
        PromptCreate.model_validate(obj)
    except ValidationError as exc:
        assert exc.errors()  # a structured error naming fields, never a crash
    else:
        raise AssertionError("an arbitrary dict must not validate as a prompt")


@given(choice=st.sampled_from(["A", "B"]), strength=st.integers(1, 3), flipped=st.booleans())
def test_pairwise_canonical_preference_follows_what_was_shown(choice, strength, flipped) -> None:
    order = [1, 0] if flipped else [0, 1]
    sub = JudgmentSubmit(choice=choice, strength=strength)
    out = canonical(sub, Protocol.pairwise, order)
    # the clip shown under `choice` is rollout order[0] for "A", order[1] for "B"
    picked = order[0] if choice == "A" else order[1]
    assert math.isclose(abs(out["preference"]), strength / 3)
    assert (out["preference"] > 0) == (picked == 0)
    assert out["choice"] == ("A" if picked == 0 else "B")


@given(cmos=st.integers(-3, 3), flipped=st.booleans())
def test_cmos_sign_corrected(cmos, flipped) -> None:
    order = [1, 0] if flipped else [0, 1]
    out = canonical(JudgmentSubmit(cmos=cmos), Protocol.cmos, order)
    # cmos > 0 means the clip shown second is better
    better_shown = 1 if cmos > 0 else 0
    if cmos == 0:
        assert out["preference"] == 0
    else:
        assert (out["preference"] > 0) == (order[better_shown] == 0)


@given(scores=st.lists(st.integers(1, 5), min_size=2, max_size=6), data=st.data())
def test_mos_unshuffle_restores_canonical_order(scores, data) -> None:
    order = data.draw(st.permutations(list(range(len(scores)))))
    shown = [scores[c] for c in order]  # what the rater saw, in presentation order
    out = canonical(JudgmentSubmit(mos=shown), Protocol.mos, list(order))
    assert out["scores"]["mos"] == scores


votes = st.lists(
    st.tuples(st.sampled_from([-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3, 1.0]), st.floats(0.05, 5.0)),
    min_size=1,
    max_size=12,
)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(v=votes, data=st.data())
def test_vote_is_order_invariant_and_antisymmetric(v, data) -> None:
    perm = data.draw(st.permutations(v))
    assert all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(_vote(v), _vote(perm)))
    wa, wb, wt = _vote(v)
    fa, fb, ft = _vote([(-p, w) for p, w in v])  # swap A and B everywhere
    assert math.isclose(wa, fb, abs_tol=1e-9) and math.isclose(wb, fa, abs_tol=1e-9) and math.isclose(wt, ft)


@given(v=votes, w=st.floats(0.05, 5.0))
def test_an_extra_vote_for_the_winner_never_flips_it(v, w) -> None:
    wa, wb, _ = _vote(v)
    if wa == wb:
        return
    winner = 1.0 if wa > wb else -1.0
    wa2, wb2, _ = _vote([*v, (winner, w)])
    assert (wa2 > wb2) == (wa > wb)
