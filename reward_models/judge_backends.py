"""Judge LM backends: next-token probabilities over the score tokens, and short generations.

Two backends share one contract so the generative reward model has one code path:

* ``LocalCausalLM``: any transformers causal LM folder (``local_files_only``; GGUF via ``gguf_file``).
* ``OpenAIChatBackend``: an OpenAI-compatible ``/chat/completions`` endpoint (vLLM, llama.cpp
  server, hosted APIs) with ``logprobs: true, top_logprobs: 20`` and ``max_tokens: 1``.

A prompt is a list of chat messages ``[{"role": "system"|"user", "content": str}]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from earmark.http import HTTPFailure, post_json

ChatPrompt = list[dict[str, str]]
SCORE_TOKENS: tuple[str, ...] = ("1", "2", "3", "4", "5")
TOP_LOGPROBS = 20  # the OpenAI API maximum


class JudgeBackend(Protocol):
    name: str

    def score_probs(self, prompts: Sequence[ChatPrompt]) -> list[dict[str, float]]:
        """Per prompt: unnormalized probability of each of SCORE_TOKENS as the next token."""
        ...

    def generate(self, prompts: Sequence[ChatPrompt], max_new_tokens: int) -> list[str]: ...


def flatten_prompt(prompt: ChatPrompt) -> str:
    """Plain-text form for models without a chat template; ends where the score digit goes."""
    parts = [m["content"].strip() for m in prompt]
    return "\n\n".join(parts) + "\nAnswer:"


class LocalCausalLM:
    """A transformers causal LM on CPU. Batches with left padding and explicit position ids so a
    padded prompt gets the same next-token distribution as the same prompt alone."""

    name = "local"

    def __init__(
        self,
        model_path: str,
        gguf_file: str | None = None,
        batch_size: int = 8,
        max_prompt_tokens: int = 2048,
        torch_threads: int | None = None,
        use_chat_template: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        kw: dict[str, Any] = {"local_files_only": True}
        if gguf_file:
            kw["gguf_file"] = gguf_file
        try:
            self.tok = AutoTokenizer.from_pretrained(model_path, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, **kw)
        except OSError as e:
            raise FileNotFoundError(
                f"cannot load a judge model from {model_path!r}"
                f"{' with gguf_file=' + repr(gguf_file) if gguf_file else ''}: {e}."
                " Pass model_path=<folder with config.json and tokenizer files> (nothing is downloaded)"
            ) from e
        self.model.eval()
        self.batch_size, self.max_prompt_tokens = int(batch_size), int(max_prompt_tokens)
        self.use_chat_template = use_chat_template and bool(getattr(self.tok, "chat_template", None))
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else (self.tok.eos_token_id or 0)
        self.score_ids = self._score_token_ids()

    def _score_token_ids(self) -> dict[str, list[int]]:
        """Ids that decode to each digit, with or without a leading space (BPE vocabularies hold
        both '5' and ' 5'); their probabilities are summed."""
        ids: dict[str, list[int]] = {}
        for d in SCORE_TOKENS:
            found: set[int] = set()
            for variant in (d, " " + d):
                enc = self.tok.encode(variant, add_special_tokens=False)
                if len(enc) == 1 and self.tok.decode(enc).strip() == d:
                    found.add(enc[0])
            if not found:
                raise ValueError(
                    f"judge tokenizer has no single token for the score {d!r}; G-Eval scoring needs the"
                    " digits 1-5 as single tokens: use another model or retrain the tokenizer"
                )
            ids[d] = sorted(found)
        return ids

    def _encode(self, prompt: ChatPrompt) -> list[int]:
        if self.use_chat_template:
            ids = self.tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 may return a BatchEncoding
                ids = ids["input_ids"]
            ids = list(ids)
        else:
            ids = self.tok.encode(flatten_prompt(prompt))
        if len(ids) > self.max_prompt_tokens:
            raise ValueError(
                f"judge prompt is {len(ids)} tokens (limit {self.max_prompt_tokens}); raise max_prompt_tokens"
                " or lower max_conversation_chars"
            )
        return ids

    def _batch(self, seqs: list[list[int]]) -> tuple[Any, Any, Any]:
        import torch

        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, n - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, pos

    def score_probs(self, prompts: Sequence[ChatPrompt]) -> list[dict[str, float]]:
        import torch

        out: list[dict[str, float]] = [{} for _ in prompts]
        seqs = [self._encode(p) for p in prompts]
        # prompts of similar length share a batch (less left padding to run through the model)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            ids, mask, pos = self._batch([seqs[i] for i in idx])
            with torch.inference_mode():
                # only the last position's logits: the LM head (576 x 49152 for SmolLM2-135M) over
                # every position was about a fifth of the multiply-adds per prompt token
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[
                    :, -1, :
                ]
            probs = torch.softmax(logits.float(), dim=-1)
            for i, row in zip(idx, probs, strict=True):
                out[i] = {d: float(row[self.score_ids[d]].sum()) for d in SCORE_TOKENS}
        return out

    def generate(self, prompts: Sequence[ChatPrompt], max_new_tokens: int) -> list[str]:
        import torch

        texts: list[str] = []
        seqs = [self._encode(p) for p in prompts]
        for b in range(0, len(seqs), self.batch_size):
            ids, mask, _ = self._batch(seqs[b : b + self.batch_size])
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.pad_id,
                )
            texts.extend(self.tok.decode(g[ids.shape[1] :], skip_special_tokens=True).strip() for g in gen)
        return texts


class JudgeHTTPError(RuntimeError):
    pass


class OpenAIChatBackend:
    """OpenAI-compatible chat completions. The API key is sent as a bearer token and never
    appears in errors, reprs or the scorer's config/version."""

    name = "openai"

    def __init__(
        self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0, retries: int = 2
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"judge base_url {base_url!r} must start with http:// or https://")
        self.url = base_url.rstrip("/") + (
            "" if base_url.rstrip("/").endswith("/chat/completions") else "/chat/completions"
        )
        self.model, self.timeout_s, self.retries = model, float(timeout_s), int(retries)
        self._key = api_key

    def __repr__(self) -> str:
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, key={'set' if self._key else 'none'})"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        try:
            out: dict[str, Any] = post_json(
                self.url, body, headers=headers, timeout_s=self.timeout_s, retries=self.retries, redact=self._redact
            )
        except HTTPFailure as e:
            if e.status is None and e.retryable:
                raise JudgeHTTPError(f"judge endpoint {self.url} unreachable: {e}; check base_url") from None
            raise JudgeHTTPError(f"judge endpoint: {e}") from None
        return out

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def score_probs(self, prompts: Sequence[ChatPrompt]) -> list[dict[str, float]]:
        out = []
        for p in prompts:
            data = self._post(
                {
                    "model": self.model,
                    "messages": p,
                    "max_tokens": 1,
                    "temperature": 0.0,
                    "logprobs": True,
                    "top_logprobs": TOP_LOGPROBS,
                }
            )
            out.append(self._parse_logprobs(data))
        return out

    def _parse_logprobs(self, data: dict[str, Any]) -> dict[str, float]:
        try:
            choice = data["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise JudgeHTTPError(f"judge endpoint {self.url} returned no choices: {str(data)[:200]}") from None
        probs = {d: 0.0 for d in SCORE_TOKENS}
        content = ((choice.get("logprobs") or {}).get("content")) or []
        if content:
            for alt in content[0].get("top_logprobs") or []:
                tok = str(alt.get("token", "")).strip()
                if tok in probs:
                    probs[tok] += math.exp(float(alt["logprob"]))
        if sum(probs.values()) == 0.0:
            # Endpoint without logprobs (or no digit in the top 20): fall back to the sampled token.
            text = str((choice.get("message") or {}).get("content") or "").strip()[:1]
            if text in probs:
                probs[text] = 1.0
        return probs

    def generate(self, prompts: Sequence[ChatPrompt], max_new_tokens: int) -> list[str]:
        out = []
        for p in prompts:
            data = self._post(
                {"model": self.model, "messages": p, "max_tokens": int(max_new_tokens), "temperature": 0.0}
            )
            try:
                out.append(str(data["choices"][0]["message"]["content"]).strip())
            except (KeyError, IndexError, TypeError):
                raise JudgeHTTPError(f"judge endpoint {self.url} returned no message content") from None
        return out
