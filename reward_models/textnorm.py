"""Text normalization for verifiable rewards: case, punctuation, and number words vs digits.

Speech policies say "twenty three", Whisper writes "23", a reference may hold "23.0" or
"twenty-three". Every comparison (answer match, WER/CER, tool arguments) goes through
``normalize_text`` so that none of these differences counts as an error.
"""

from __future__ import annotations

import re
import unicodedata

_UNITS = {
    "zero": 0,
    "oh": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORDINALS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "twentieth": 20,
    "thirtieth": 30,
}
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "=": " equals ", "@": " at "}
# British spellings Whisper (en) writes the American way; both sides are mapped.
_SPELLING = {
    "colour": "color",
    "favourite": "favorite",
    "centre": "center",
    "metre": "meter",
    "theatre": "theater",
    "grey": "gray",
    "organise": "organize",
    "realise": "realize",
}
_NUMBER_WORDS = set(_UNITS) | set(_TENS) | set(_SCALES) | {"hundred"}
# "oh" only counts as zero inside a digit run ("two oh five"); alone it is an interjection.
_AMBIGUOUS = {"oh"}


def _words_to_numbers(words: list[str]) -> list[int] | None:
    """Values of a run of number words. A run can hold several numbers: "seven thirty" is 7 30
    (a time), not 37, so a unit after a unit, or tens after a unit/teen/tens, starts a new number.
    """
    numbers: list[int] = []
    total, current, last, last_scale = 0, 0, None, None  # last: unit | teen | tens | hundred | scale
    seen = False

    def flush() -> None:
        nonlocal total, current, last, last_scale, seen
        if seen:
            numbers.append(total + current)
        total, current, last, last_scale, seen = 0, 0, None, None, False

    for w in words:
        if w == "and":
            continue
        if w in _UNITS:
            v = _UNITS[w]
            kind = "unit" if v < 10 else "teen"
            ok = last in (None, "hundred", "scale") or (kind == "unit" and last == "tens")
            if not ok:
                flush()
            current += v
            last = kind
        elif w in _TENS:
            if last not in (None, "hundred", "scale"):
                flush()
            current += _TENS[w]
            last = "tens"
        elif w == "hundred":
            if last not in (None, "unit", "teen") or current >= 100:
                flush()
            current = max(current, 1) * 100
            last = "hundred"
        elif w in _SCALES:
            scale = _SCALES[w]
            if last == "scale" or (last_scale is not None and scale >= last_scale):
                flush()
            total += max(current, 1) * scale
            current, last, last_scale = 0, "scale", scale
        else:
            return None
        seen = True
    flush()
    return numbers or None


def _is_digit_sequence(words: list[str]) -> bool:
    """'two oh five' / 'four one five five' are read digit by digit, not summed."""
    return len(words) > 1 and all(w in _UNITS and _UNITS[w] < 10 for w in words)


def words_to_digits(text: str) -> str:
    """Replace runs of English number words with digits; keep every other token as it is."""
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t in _ORDINALS:
            out.append(f"{_ORDINALS[t]}th" if _ORDINALS[t] > 3 else {1: "1st", 2: "2nd", 3: "3rd"}[_ORDINALS[t]])
            i += 1
            continue
        if t not in _NUMBER_WORDS:
            out.append(t)
            i += 1
            continue
        j = i
        while j < len(tokens):
            if tokens[j] in _NUMBER_WORDS:
                j += 1
            # "and" joins only after hundred/thousand ("one hundred and five"), not "one and two"
            elif (
                tokens[j] == "and"
                and j > i
                and (tokens[j - 1] == "hundred" or tokens[j - 1] in _SCALES)
                and j + 1 < len(tokens)
                and tokens[j + 1] in _NUMBER_WORDS
            ):
                j += 1
            else:
                break
        run = tokens[i:j]
        if len(run) == 1 and run[0] in _AMBIGUOUS:
            out.append(t)
            i += 1
            continue
        # "point five" after a number run: decimals
        decimal = ""
        if j + 1 < len(tokens) and tokens[j] == "point" and tokens[j + 1] in _UNITS:
            k = j + 1
            while k < len(tokens) and tokens[k] in _UNITS and _UNITS[tokens[k]] < 10:
                decimal += str(_UNITS[tokens[k]])
                k += 1
            j = k
        if _is_digit_sequence(run):
            num = "".join(str(_UNITS[w]) for w in run)
        else:
            values = _words_to_numbers(run)
            num = " ".join(str(v) for v in values) if values else " ".join(run)
        out.append(num + (f".{decimal}" if decimal else ""))
        i = j
    return " ".join(out)


def normalize_text(text: str) -> str:
    """Lowercase, spell out symbols, number words -> digits, drop punctuation and filler commas.

    >>> normalize_text("Twenty-three, please!")
    '23 please'
    >>> normalize_text("It costs $1,000.50")
    'it costs 1000.50 dollars'
    """
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = s.replace("’", "'")
    s = re.sub(r"(?<=\d),(?=\d{3}\b)", "", s)  # 1,000 -> 1000
    s = re.sub(r"\$\s*(\d+(?:\.\d+)?)", r"\1 dollars", s)
    for sym, word in _SYMBOLS.items():
        s = s.replace(sym, word)
    s = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", s)  # twenty-three -> twenty three
    s = re.sub(r"(\d)\.(?!\d)", r"\1 ", s)  # sentence-final period after a number
    s = re.sub(r"[^\w\s'.]", " ", s)  # punctuation except apostrophes and decimal points
    s = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", s)
    s = re.sub(r"(?<=\w)'(?=\w)", "\0", s).replace("'", " ").replace("\0", "'")
    s = words_to_digits(" ".join(_SPELLING.get(w, w) for w in s.split()))
    s = re.sub(r"\b(\d+)\.0+\b", r"\1", s)  # 23.0 == 23
    return " ".join(s.split())
