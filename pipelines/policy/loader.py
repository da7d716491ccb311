"""Load a registered policy (kind + uri from the `policies` table) inside any process or actor.

kinds:
  offline  the bundled offline speech policy, or any checkpoint fine-tuned from it: ``file:///dir``
  hf       any local Hugging Face causal LM folder: ``file:///dir`` (options: audio decoder hooks)
  hf-piper a local HF chat LM folder (SmolLM2-135M-Instruct by default, ``smollm2_piper.ensure_smollm2_hf``)
           that writes a prosody header before each reply, spoken by a Piper voice (the ``voice`` extra,
           GPL-3.0-or-later): ``file:///dir``; option ``voice_model`` (a Piper .onnx, default the joe wheel's)
  openai   an OpenAI-compatible chat-completions endpoint with audio output: ``http(s)://host/v1``;
           options ``model``, ``voice``; the key comes from EARMARK_POLICY_API_KEY, never from the store
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.policy.base import Policy

# kinds whose weights are a local folder that training can load and update
LOCAL_KINDS = ("offline", "hf", "hf-piper")


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", ""):
        raise ValueError(f"policy uri {uri!r}: a local checkpoint needs a file:///abs/dir uri")
    return Path(parsed.path if parsed.scheme else uri)


def load_policy(kind: str, uri: str, **options: Any) -> Policy:
    if kind == "offline":
        from pipelines.policy.offline.policy import OfflineSpeechPolicy

        return OfflineSpeechPolicy.from_pretrained(uri_to_path(uri), **options)
    if kind == "hf":
        from pipelines.policy.hf import HFCausalLMPolicy

        return HFCausalLMPolicy(uri_to_path(uri), **options)
    if kind == "hf-piper":
        from pipelines.policy.smollm2_piper import HFPiperPolicy

        return HFPiperPolicy(uri_to_path(uri), **options)
    if kind == "openai":
        from pipelines.policy.openai_compat import OpenAIChatPolicy

        opts = dict(options)
        model = opts.pop("model", None)
        if not model:
            raise ValueError("an openai-kind policy needs config {'model': NAME} (the served model id)")
        return OpenAIChatPolicy(uri, model, api_key=os.environ.get("EARMARK_POLICY_API_KEY"), **opts)
    raise ValueError(f"policy kind {kind!r} is unknown; use offline, hf, hf-piper or openai")
