"""earmark: RLHF reward and preference data platform for audio-language models.

``earmark.connect()`` is the Python API; ``earmark`` on the command line is the CLI.
Importing this package has no side effects and pulls in no torch or ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from earmark.api import Earmark


def connect(*args: Any, **kwargs: Any) -> Earmark:
    from earmark.api import connect as _connect

    return _connect(*args, **kwargs)


__all__ = ["__version__", "connect"]
