"""Progress bars for long work (tqdm), silenced in tests and non-interactive runs on request."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


@contextmanager
def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it") -> Iterator[Any]:
    if not enabled:
        yield _Null()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)
    try:
        yield bar
    finally:
        bar.close()
