"""Progress bars for long work: the project's one progress library is rich (the CLI's too).
Silenced in tests and non-interactive runs on request (``enabled=False``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Null:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass


class _Bar:
    """A handle with the two calls the jobs make: ``update(n)`` and ``set_postfix_str(s)``."""

    def __init__(self, progress: Any, task: Any) -> None:
        self._progress, self._task = progress, task

    def update(self, n: int = 1) -> None:
        self._progress.update(self._task, advance=n)

    def set_postfix_str(self, s: str) -> None:
        self._progress.update(self._task, postfix=s)


@contextmanager
def progress_bar(total: int, desc: str, *, enabled: bool = True, unit: str = "it") -> Iterator[Any]:
    if not enabled:
        yield _Null()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[postfix]}"),
    )
    with progress:
        yield _Bar(progress, progress.add_task(desc, total=total, postfix=""))
