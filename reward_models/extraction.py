"""Final-answer extraction and equivalence, as math/RL trainers grade verifiable answers.

A response is graded on the answer it commits to, never on whether the reference appears
somewhere in it (listing many numbers must not win):

1. ``#### N`` (GSM8K style; the last one), else
2. ``\\boxed{...}`` / ``\\fbox{...}`` (MATH style; the last one, braces balanced), else
3. for a numeric reference, the last number of the response (digits or number words), else
4. for a text reference, the whole normalized response, or (with containment) its final words.

Numbers compare by value (``1,000`` = ``1000.0`` = ``\\frac{2000}{2}``; ``50%`` = ``50``; ``3/4`` =
``0.75``); text compares after ``normalize_text`` (case, punctuation, number words).
Tool calls in a text response: ``<tool_call>{...}</tool_call>`` blocks (Hermes/Qwen), or a JSON
object/list of ``{"name", "arguments"}``; ``tool_calls_exact`` is order-sensitive exact matching.
"""

from __future__ import annotations

import functools
import json
import math
import re
from fractions import Fraction
from typing import Any

from reward_models.textnorm import normalize_text

_HASH_RE = re.compile(r"####\s*([^\n]*)")
_NUM_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_FRAC_RE = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_TEXT_WRAP_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_PLAIN_NUM_RE = re.compile(r"-?\d+(?:\.\d+)?")
_TOOL_TAG_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def _last_braced(text: str, command: str) -> str | None:
    """Content of the last ``\\command{...}`` with balanced braces, or None."""
    start = text.rfind("\\" + command)
    while start != -1:
        i = start + len(command) + 1
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            depth, j = 0, i
            while j < len(text):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        return text[i + 1 : j]
                j += 1
        start = text.rfind("\\" + command, 0, start)
    return None


def extract_marked_answer(text: str) -> tuple[str | None, str]:
    """The answer the response marks explicitly: (answer, how) with how in {'####', 'boxed', 'none'}."""
    hashes = _HASH_RE.findall(text)
    if hashes and hashes[-1].strip():
        return hashes[-1].strip(), "####"
    for cmd in ("boxed", "fbox"):
        b = _last_braced(text, cmd)
        if b is not None:
            return b.strip(), "boxed"
    return None, "none"


def parse_number(s: Any) -> Fraction | float | None:
    """The value of a number written as digits, a fraction, LaTeX or words; None if it is not one."""
    if type(s) is str:  # the usual case; short answers and references repeat: their values are cached
        return _parse_short_number_text(s) if len(s) <= 64 else _parse_number_text(s)
    if isinstance(s, bool) or s is None:
        return None
    if isinstance(s, int):
        return Fraction(s)
    if isinstance(s, float):
        return s if math.isfinite(s) else None
    if not isinstance(s, str):
        try:  # numpy scalars and the like
            return parse_number(s.item())  # type: ignore[attr-defined]
        except AttributeError:
            return None
    return _parse_number_text(s)


def _parse_number_text(s: str) -> Fraction | float | None:
    t = s.strip()
    if _PLAIN_NUM_RE.fullmatch(t):  # the common case, without the LaTeX clean-up below
        return float(t) if len(t) < 16 else Fraction(t)
    t = _TEXT_WRAP_RE.sub(r"\1", t)
    t = _FRAC_RE.sub(r"(\1)/(\2)", t)
    t = t.replace("\\!", "").replace("\\,", "").replace("$", "").replace("\\%", "%").strip()
    t = t.rstrip(".").strip()
    if t.endswith("%"):
        t = t[:-1].strip()
    t = t.replace("(", "").replace(")", "")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?|-?\.\d+)\s*/\s*(-?\d+(?:\.\d+)?)", t)
    try:
        if m:
            den = Fraction(m.group(2))
            return Fraction(m.group(1)) / den if den != 0 else None
        if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", t):
            return Fraction(t)
    except (ValueError, ZeroDivisionError):
        return None
    words = normalize_text(s).replace(" ", "")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", words):
        return Fraction(words)
    return None


_parse_short_number_text = functools.lru_cache(maxsize=8192)(_parse_number_text)


def last_number(text: str) -> str | None:
    """The last number written in digits; when there is none, the last one in number words
    ("forty two"), so a spoken answer still counts."""
    raw = _NUM_RE.findall(text)
    if raw:
        return raw[-1].strip()
    norm = _NUM_RE.findall(normalize_text(text))
    return norm[-1] if norm else None


def numbers_equal(a: Any, b: Any) -> bool | None:
    """True/False when both are numbers, None when either is not."""
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return None
    return math.isclose(float(x), float(y), rel_tol=1e-6, abs_tol=1e-9)


def answers_equivalent(pred: str, ref: Any) -> bool:
    eq = numbers_equal(pred, ref)
    if eq is not None:
        return eq
    p = normalize_text(_TEXT_WRAP_RE.sub(r"\1", str(pred)))
    r = normalize_text(_TEXT_WRAP_RE.sub(r"\1", str(ref)))
    return bool(r) and p == r


def grade_answer(response: str, answers: list[Any], allow_final_words: bool = True) -> tuple[bool, str, str | None]:
    """(correct, how, extracted) for a response against accepted answers (see module doc)."""
    marked, how = extract_marked_answer(response)
    if marked is not None:
        for a in answers:
            if answers_equivalent(marked, a):
                return True, how, marked
        return False, how, marked
    numeric = [a for a in answers if parse_number(a) is not None]
    if numeric:
        last = last_number(response)
        if last is not None and any(numbers_equal(last, a) for a in numeric):
            return True, "last_number", last
    resp_n = normalize_text(response).split()
    for a in answers:
        a_n = normalize_text(str(a)).split()
        if a_n and resp_n == a_n:
            return True, "equal", " ".join(resp_n)
        if allow_final_words and a_n and parse_number(a) is None and resp_n[-len(a_n) :] == a_n:
            return True, "final_words", " ".join(a_n)
    return False, "none", last_number(response) if numeric else None


# ---------------------------------------------------------------- tool calls in text


def _as_call(obj: Any) -> dict[str, Any] | None:
    if isinstance(obj, dict) and "function" in obj and isinstance(obj["function"], dict):
        obj = obj["function"]  # OpenAI form {"type": "function", "function": {...}}
    if isinstance(obj, dict) and isinstance(obj.get("name"), str):
        return {"name": obj["name"], "arguments": obj.get("arguments", obj.get("parameters", {}))}
    return None


def parse_tool_calls(text: str) -> list[dict[str, Any]] | None:
    """Tool calls written in a text response, or None when the text holds none that parse."""
    blocks = _TOOL_TAG_RE.findall(text)
    candidates: list[Any] = []
    if blocks:
        for b in blocks:
            try:
                candidates.append(json.loads(b))
            except json.JSONDecodeError:
                return None
    else:
        s = text.strip()
        if not s.startswith(("{", "[")):
            return None
        try:
            obj = json.loads(s)
        except json.JSONDecodeError:
            return None
        if isinstance(obj, dict) and "tool_calls" in obj:
            obj = obj["tool_calls"]
        candidates = obj if isinstance(obj, list) else [obj]
    calls = [_as_call(c) for c in candidates]
    return None if any(c is None for c in calls) else calls  # type: ignore[return-value]


def tool_calls_exact(pred: list[dict[str, Any]], ref: list[dict[str, Any]]) -> bool:
    """Same calls in the same order: names identical, arguments equal as values (key order,
    JSON-string vs object, number spelling and case ignored)."""
    return len(pred) == len(ref) and all(
        str(p.get("name", "")).strip() == str(r.get("name", "")).strip()
        and values_equal(_parse_args(p.get("arguments")), _parse_args(r.get("arguments")))
        for p, r in zip(pred, ref, strict=True)
    )


# argument values (shared with the tool-call scorers in reward_models.verifiable and .duplex)


def _parse_args(args: Any) -> dict[str, Any]:
    if args is None:
        return {}
    if isinstance(args, str):  # OpenAI-style tool calls carry arguments as a JSON string
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return {"__unparsed__": args}
    if not isinstance(args, dict):
        return {"__value__": args}
    return args


def _as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(normalize_text(v).replace(" ", ""))
        except ValueError:
            return None
    return None


def values_equal(a: Any, b: Any) -> bool:
    """Argument equality that ignores case, punctuation, number spelling and key order."""
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return math.isclose(na, nb, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, str) and isinstance(b, str):
        return normalize_text(a) == normalize_text(b)
    return a == b
