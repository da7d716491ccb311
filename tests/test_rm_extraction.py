"""Final-answer extraction and equivalence (reward_models.extraction), hand-checked."""

from __future__ import annotations

import pytest

from reward_models.extraction import (
    extract_marked_answer,
    grade_answer,
    last_number,
    parse_number,
    parse_tool_calls,
    tool_calls_exact,
)


@pytest.mark.parametrize(
    "text, want",
    [
        ("work...\n#### 72", ("72", "####")),
        ("#### 1\n#### 2", ("2", "####")),
        ("so $\\boxed{\\frac{3}{4}}$", ("\\frac{3}{4}", "boxed")),
        ("\\boxed{x^{2}+1} then \\boxed{7}", ("7", "boxed")),
        ("\\boxed{\\{1, 2\\}}", ("\\{1, 2\\}", "boxed")),
        ("\\fbox{B}", ("B", "boxed")),
        ("no marker 12", (None, "none")),
    ],
)
def test_extract_marked_answer(text, want) -> None:
    assert extract_marked_answer(text) == want


@pytest.mark.parametrize(
    "s, value",
    [
        ("1,000", 1000),
        ("1000.0", 1000),
        ("\\frac{2000}{2}", 1000),
        ("\\dfrac{1}{2}", 0.5),
        ("3/4", 0.75),
        ("50%", 50),
        ("$12.50", 12.5),
        ("-7", -7),
        ("forty two", 42),
        ("\\text{5}", 5),
        (7, 7),
        ("x+1", None),
        ("1/0", None),
        (True, None),
    ],
)
def test_parse_number(s, value) -> None:
    got = parse_number(s)
    assert (got is None) if value is None else float(got) == pytest.approx(value)


def test_last_number() -> None:
    assert last_number("I had 3 apples, then 12.5 more") == "12.5"
    assert last_number("The answer is forty two.") == "42"
    assert last_number("nothing here") is None


@pytest.mark.parametrize(
    "response, answers, ok, how",
    [
        ("Natalia sold 24 clips.\n#### 72", ["72"], True, "####"),
        ("#### 72.0", [72], True, "####"),
        ("\\boxed{0.5}", ["\\frac{1}{2}"], True, "boxed"),
        ("\\boxed{\\text{(C)}}", ["C"], True, "boxed"),
        ("The answer is 42.", ["42"], True, "last_number"),
        ("It is 1,000 dollars", ["1000"], True, "last_number"),
        # listing many numbers does not win: only the final one counts
        (" ".join(str(i) for i in range(100)), ["42"], False, "none"),
        ("42 is wrong, it is 43", ["42"], False, "none"),
        # a marked answer beats numbers around it
        ("#### 41 (not 42)", ["42"], False, "####"),
        ("The capital is Paris.", ["Paris"], True, "final_words"),
        ("PARIS!", ["Paris"], True, "equal"),
        ("Paris is not it, Berlin", ["Paris"], False, "none"),
    ],
)
def test_grade_answer(response, answers, ok, how) -> None:
    got = grade_answer(response, answers)
    assert got[:2] == (ok, how)


def test_tool_calls_parse_and_exact() -> None:
    ref = [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}]
    hermes = '<tool_call>{"name": "get_weather", "arguments": {"days": "three", "city": "paris"}}</tool_call>'
    assert tool_calls_exact(parse_tool_calls(hermes), ref)
    openai = '[{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"days\\": 3}"}}]'
    assert tool_calls_exact(parse_tool_calls(openai), ref)
    assert not tool_calls_exact(
        parse_tool_calls('{"name": "get_weather", "arguments": {"city": "Rome", "days": 3}}'), ref
    )
    assert not tool_calls_exact(parse_tool_calls(hermes + hermes), ref)  # an extra call
    assert parse_tool_calls("just text") is None and parse_tool_calls("<tool_call>{bad</tool_call>") is None


def test_answer_match_and_tool_scorer_use_extraction() -> None:
    from reward_models.base import ScoringInput, build_scorer

    am = build_scorer("answer_match")
    res = am.score_one(ScoringInput(reference={"answer": "42"}, response_text="1 2 42 100"))
    assert res[1].score == 0.0
    tc = build_scorer("tool_calls", exact=True)
    item = ScoringInput(
        reference={"tool_calls": [{"name": "f", "arguments": {"x": 1}}]},
        response_text='<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>',
    )
    assert tc.score_one(item)[0].score == 1.0
