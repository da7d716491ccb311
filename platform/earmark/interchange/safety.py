"""Reading untrusted files: bounded lines, strict JSON, confined audio paths.

- JSON: NaN/Infinity (and numbers that overflow to infinity), NUL characters and lone UTF-16
  surrogates are refused with InvalidInput naming the line and field; PostgreSQL never sees them.
- Lines are read with a length bound (MAX_LINE_BYTES), so a file without newlines cannot fill memory.
- Audio paths resolve under one base directory (the file's folder by default, ``--audio-root`` to
  widen it), must be regular files (no devices, FIFOs, sockets), and their size is checked before any
  byte is read. URLs are fetched only when allowed, with the same size bound.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from earmark.domain.limits import Limits
from earmark.errors import InvalidInput

# One line may carry inline base64 audio (4/3 of a clip) plus a full conversation.
MAX_LINE_BYTES = Limits.MAX_AUDIO_BYTES * 4 // 3 + 16 * 1024 * 1024
MAX_JSON_DOCUMENT_BYTES = 512 * 1024 * 1024  # a JSON array file (Label Studio) is parsed whole
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"{s} overflows to infinity")
    return v


def bad_value(obj: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, problem) of the first NaN/Inf, NUL or lone surrogate inside obj, else None."""
    stack = [(path, obj)]
    while stack:
        p, v = stack.pop()
        if isinstance(v, str):
            if "\x00" in v:
                return p or "(value)", "contains a NUL byte (U+0000)"
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return p or "(value)", "contains a lone UTF-16 surrogate (invalid Unicode)"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return p or "(value)", f"is {v}, not a finite number"
        elif isinstance(v, dict):
            for k, x in v.items():
                if isinstance(k, str) and ("\x00" in k or not _encodable(k)):
                    return f"{p}.{k!r}" if p else repr(k), "key contains a NUL or lone surrogate"
                stack.append((f"{p}.{k}" if p else str(k), x))
        elif isinstance(v, list | tuple):
            stack.extend((f"{p}[{i}]", x) for i, x in enumerate(v))
    return None


def _encodable(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def refuse_bad_values(obj: Any, where: str, fmt: str) -> None:
    if (bad := bad_value(obj)) is not None:
        field, problem = bad
        raise InvalidInput(
            f"{where}: field {field} {problem}; the {fmt} format takes finite numbers and valid UTF-8 text "
            "only: fix or drop that value in the source"
        )


# One decoder for every line (json.loads with hooks builds a new decoder per call).
_STRICT_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def loads_line(line: str, where: str, fmt: str) -> Any:
    """Strict JSON for one line: NaN/Infinity/NUL/lone surrogates refused naming the field."""
    try:
        if line.startswith("\ufeff"):  # as json.loads says it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", line, 0)
        obj = _STRICT_DECODER.decode(line)
    except ValueError as exc:  # JSONDecodeError is a ValueError; so are our constant/float refusals
        msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidInput(
            f"{where}: invalid JSON ({msg}); the {fmt} format takes one JSON object per line with finite "
            "numbers (no NaN/Infinity): fix that line"
        ) from None
    # Cheap path: scan the raw text; only walk the object when an escape could hide a bad value.
    if "\\u0000" in line or "\x00" in line or _SURROGATE_ESCAPE.search(line):
        refuse_bad_values(obj, where, fmt)
    return obj


def iter_lines(path: Path, fmt: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of non-blank lines, each at most MAX_LINE_BYTES; UTF-8 only."""
    with open(path, "rb") as f:
        no = 0
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            no += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidInput(
                    f"{path}:{no}: line is longer than {MAX_LINE_BYTES} bytes; the {fmt} format takes one "
                    "record per line: keep audio in files next to the JSONL instead of inline base64"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(
                    f"{path}:{no}: not valid UTF-8 (byte {exc.start} of the line); save the file as UTF-8"
                ) from None
            if text.strip():
                yield no, text


def load_json_document(path: Path, fmt: str) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_DOCUMENT_BYTES:
        raise InvalidInput(
            f"{path} is {size} bytes; a {fmt} JSON document is read whole and the limit is "
            f"{MAX_JSON_DOCUMENT_BYTES} bytes: export it as JSON Lines instead"
        )
    text = path.read_bytes()
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8") from None
    return loads_line(s, str(path), fmt)


def check_regular_file(path: Path, what: str) -> os.stat_result:
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidInput(f"{what} {path} cannot be read ({exc.strerror}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{what} {path} is not a regular file (device, FIFO or directory); give a file")
    return st


def _read_bounded(f: IO[bytes], limit: int, where: str, what: str) -> bytes:
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidInput(
            f"{where}: {what} is larger than {limit} bytes (Limits.MAX_AUDIO_BYTES); split the clip or lower its "
            "sample rate"
        )
    return data


class AudioSource:
    """Reads the bytes behind an audio reference, confined to base_dir (see module doc)."""

    def __init__(
        self, base_dir: Path, *, root: Path | None = None, allow_urls: bool = False, url_timeout_s: float = 30.0
    ) -> None:
        self.base_dir = base_dir.resolve()  # relative paths are relative to the import file's folder
        self.root = (root or base_dir).resolve()  # and must resolve under the audio root
        self.allow_urls = allow_urls
        self.url_timeout_s = url_timeout_s

    def read_path(self, ref: str, where: str) -> bytes:
        if ref.startswith(("http://", "https://")):
            return self.read_url(ref, where)
        if "://" in ref:
            raise InvalidInput(f"{where}: audio {ref!r} uses a scheme earmark does not read; give a file path")
        p = Path(ref)
        full = (p if p.is_absolute() else self.base_dir / p).resolve()
        if not full.is_relative_to(self.root):
            raise InvalidInput(
                f"{where}: audio path {ref!r} is outside the audio root {self.root}; paths must stay under "
                "the import file's folder: move the file there or widen with --audio-root DIR"
            )
        try:
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise InvalidInput(
                f"{where}: audio file {ref!r} cannot be opened ({exc.strerror}); paths are relative to {self.base_dir}"
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{where}: audio {ref!r} is not a regular file; give a WAV or FLAC file")
            if st.st_size > Limits.MAX_AUDIO_BYTES:
                raise InvalidInput(
                    f"{where}: audio file {ref!r} is {st.st_size} bytes; the limit is {Limits.MAX_AUDIO_BYTES} "
                    "bytes: split the clip or lower its sample rate"
                )
            return _read_bounded(f, Limits.MAX_AUDIO_BYTES, where, f"audio file {ref!r}")

    def read_url(self, url: str, where: str) -> bytes:
        if not self.allow_urls:
            raise InvalidInput(
                f"{where}: audio {url!r} is a URL and URLs are not fetched by default; download the audio next "
                "to the file, or pass --allow-urls"
            )
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=self.url_timeout_s) as r:  # noqa: S310 - opt-in, http(s) only
                length = r.headers.get("Content-Length")
                if length and int(length) > Limits.MAX_AUDIO_BYTES:
                    raise InvalidInput(f"{where}: {url} is {length} bytes; the limit is {Limits.MAX_AUDIO_BYTES}")
                return _read_bounded(r, Limits.MAX_AUDIO_BYTES, where, url)
        except InvalidInput:
            raise
        except Exception as exc:
            raise InvalidInput(f"{where}: could not fetch {url} ({exc}); check the URL or download it") from None

    @staticmethod
    def read_base64(data: str, where: str) -> bytes:
        if len(data) > Limits.MAX_AUDIO_BYTES * 4 // 3 + 4:
            raise InvalidInput(f"{where}: inline base64 audio exceeds {Limits.MAX_AUDIO_BYTES} bytes; split the clip")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: audio base64 is not valid base64; encode the WAV/FLAC bytes") from None
