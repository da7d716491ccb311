"""The offline speech policy: a tiny transformers LM with prosody-control tokens, spoken by eSpeak NG.

Import ``OfflineSpeechPolicy`` from ``pipelines.policy.offline.policy`` and ``ensure_checkpoint``
from ``pipelines.policy.offline.build``; both are re-exported here lazily so that importing the
corpus or markup helpers does not pull in torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BuildConfig", "OfflineSpeechPolicy", "default_checkpoint_path", "ensure_checkpoint"]


def __getattr__(name: str) -> Any:
    if name == "OfflineSpeechPolicy":
        from pipelines.policy.offline.policy import OfflineSpeechPolicy

        return OfflineSpeechPolicy
    if name in ("ensure_checkpoint", "default_checkpoint_path", "BuildConfig"):
        from pipelines.policy.offline import build

        return getattr(build, name)
    raise AttributeError(f"module 'pipelines.policy.offline' has no attribute {name!r}")
