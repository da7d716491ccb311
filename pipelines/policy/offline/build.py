"""Build the offline speech policy checkpoint: tokenizer + tiny Llama trained on the bundled corpus.

``python -m pipelines.policy.offline [--out DIR] [--steps N] [--seed S]`` trains in about a
minute on two CPU cores and writes a standard Hugging Face folder (``save_pretrained`` for model
and tokenizer, chat template included) plus ``earmark_policy.json`` describing the build.
``ensure_checkpoint()`` materialises it on first use and returns the cached folder afterwards; a
file lock makes concurrent callers (several rollout actors on one machine) do that once.

The default-recipe checkpoint also ships in ``pipelines/data/offline-speech-policy-v0`` (8.6 MB):
float reductions differ between CPUs, so a local rebuild is close to but not bit-identical with
another machine's, and shipping one copy gives every worker and every CI run the same v0.
``ensure_checkpoint`` copies it when its manifest matches the current corpus and recipe, and
builds otherwise (or when asked to: ``--force``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines.policy.offline.corpus import (
    DATA_DIR,
    DIALOGUES_FILE,
    NEUTRAL,
    ON_TARGET_PROB,
    load_dialogues,
    load_personas,
)
from pipelines.policy.offline.markup import ASSISTANT, LEVELS, RATE_LEVELS, render_chat

POLICY_NAME = "offline-speech-policy"
POLICY_VERSION = "v0"
MANIFEST = "earmark_policy.json"
BUNDLED_DIR = DATA_DIR / f"{POLICY_NAME}-{POLICY_VERSION}"


@dataclass(frozen=True)
class BuildConfig:
    """Model shape and training schedule; the defaults are the shipped v0 recipe."""

    seed: int = 0
    vocab_size: int = 2048
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_positions: int = 512
    steps: int = 450
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 30
    weight_decay: float = 0.01
    assistant_only_loss: bool = True  # the prompt side is input, not something to imitate
    threads: int = 2  # fixed, not the caller's: the weights depend on the reduction order


def earmark_home() -> Path:
    return Path(os.environ.get("EARMARK_HOME") or "./.earmark").expanduser()


def default_checkpoint_path() -> Path:
    return earmark_home() / "models" / f"{POLICY_NAME}-{POLICY_VERSION}"


def _batches(seqs: list[list[int]], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Index batches of similar length (little padding), in shuffled order."""
    order = sorted(range(len(seqs)), key=lambda i: (len(seqs[i]), rng.random()))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(batches)
    return batches


def _assistant_labels(ids: list[int], assistant_id: int, end_id: int) -> list[int]:
    """Labels that train only assistant turns (their text, control tokens and closing <|end|>)."""
    labels, inside = [], False
    for t in ids:
        labels.append(t if inside else -100)
        if t == assistant_id:
            inside = True
        elif t == end_id:
            inside = False
    return labels


class _ProsodyRedraw:
    """Re-draws each assistant turn's opening rate/pitch tokens every time a dialogue is used.

    The corpus has one response per (persona, prompt); trained on fixed tokens, the model would
    memorise one prosody per prompt. Redrawing from the persona's distribution (on target with
    ON_TARGET_PROB, otherwise another level) teaches p(prosody | persona) instead, so samples
    vary the way the persona card says and preference training has something to move.
    """

    def __init__(self, tok, dialogues: list[dict[str, Any]]) -> None:
        self.rate_ids = {lv: tok.convert_tokens_to_ids(f"<rate_{lv}>") for lv in RATE_LEVELS}
        self.pitch_ids = {lv: tok.convert_tokens_to_ids(f"<pitch_{lv}>") for lv in LEVELS}
        self.asst_id = tok.convert_tokens_to_ids(ASSISTANT)
        cards = {c["id"]: c for c in load_personas()} | {NEUTRAL["id"]: NEUTRAL}
        self.targets = [cards[d["persona_id"]]["prosody"] for d in dialogues]

    def _draw(self, rng: random.Random, target: str, ids: dict[str, int]) -> int:
        if rng.random() < ON_TARGET_PROB:
            return ids[target]
        return ids[rng.choice([lv for lv in ids if lv != target])]

    def __call__(self, seq: list[int], index: int, rng: random.Random) -> list[int]:
        seq = list(seq)
        rate_set, pitch_set = set(self.rate_ids.values()), set(self.pitch_ids.values())
        target = self.targets[index]
        for pos in range(len(seq) - 2):
            if seq[pos] == self.asst_id and seq[pos + 1] in rate_set and seq[pos + 2] in pitch_set:
                seq[pos + 1] = self._draw(rng, target["rate"], self.rate_ids)
                seq[pos + 2] = self._draw(rng, target["pitch"], self.pitch_ids)
        return seq


def _lr_at(step: int, cfg: BuildConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def build_checkpoint(out: Path, cfg: BuildConfig = BuildConfig(), progress: bool = True) -> dict[str, Any]:
    """Train the tokenizer and model and save them to ``out``; returns the build manifest.

    Deterministic for a seed on a given CPU type: training runs on ``cfg.threads`` torch threads
    whatever the caller uses, and the caller's setting is restored afterwards.
    """
    import torch

    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _build(out, cfg, progress)
    finally:
        torch.set_num_threads(previous_threads)


def _build(out: Path, cfg: BuildConfig, progress: bool) -> dict[str, Any]:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from pipelines.policy.offline.tokenizer import train_tokenizer
    from pipelines.progress import progress_bar

    t0 = time.perf_counter()
    dialogues = load_dialogues()
    texts = [render_chat(d["messages"], add_generation_prompt=False) for d in dialogues]
    tok = train_tokenizer(texts, vocab_size=cfg.vocab_size)
    seqs = [tok(t, add_special_tokens=False)["input_ids"][: cfg.max_positions] for t in texts]
    asst_id, end_id = tok.convert_tokens_to_ids(ASSISTANT), tok.eos_token_id
    targets = [_assistant_labels(s, asst_id, end_id) if cfg.assistant_only_loss else list(s) for s in seqs]

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    mcfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(mcfg)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.98),
    )
    model.train()
    pad = tok.pad_token_id
    queue: list[list[int]] = []
    losses: list[float] = []
    redraw = _ProsodyRedraw(tok, dialogues)
    with progress_bar(cfg.steps, "offline policy", enabled=progress, unit="step") as bar:
        for step in range(cfg.steps):
            if not queue:
                queue = _batches(seqs, cfg.batch_size, rng)
            idx = queue.pop()
            width = max(len(seqs[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            labels = torch.full((len(idx), width), -100, dtype=torch.long)
            for r, i in enumerate(idx):  # right padding: positions start at 0 for every row
                row = redraw(seqs[i], i, rng)
                ids[r, : len(row)] = torch.tensor(row)
                mask[r, : len(row)] = 1
                labels[r, : len(row)] = torch.tensor([t if keep != -100 else -100 for t, keep in zip(row, targets[i])])
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, cfg)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if step % 10 == 0 or step == cfg.steps - 1:
                bar.set_postfix_str(f"loss={sum(losses[-10:]) / len(losses[-10:]):.3f}")
            bar.update(1)

    model.eval()
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        do_sample=True,
        temperature=0.8,
        top_p=0.95,
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    manifest = {
        "name": POLICY_NAME,
        # Float reductions differ across CPUs: pin this hash when registering, so every worker
        # can check it loads the same v0 rather than a local rebuild with slightly other weights.
        "weights_sha256": hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest(),
        "version": POLICY_VERSION,
        "params": n_params,
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "build_seconds": round(time.perf_counter() - t0, 1),
        "cpu": _cpu_name(),
        "corpus_sha256": hashlib.sha256(DIALOGUES_FILE.read_bytes()).hexdigest(),
        "corpus_dialogues": len(dialogues),
        "corpus_tokens": sum(len(s) for s in seqs),
        "config": asdict(cfg),
        "torch": torch.__version__,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def is_complete(path: Path) -> bool:
    return (path / MANIFEST).is_file() and (path / "config.json").is_file()


def bundled_is_current(cfg: BuildConfig = BuildConfig()) -> bool:
    """Whether the shipped checkpoint was built from the current corpus with recipe ``cfg``."""
    if not is_complete(BUNDLED_DIR):
        return False
    manifest = json.loads((BUNDLED_DIR / MANIFEST).read_text())
    return manifest.get("corpus_sha256") == hashlib.sha256(DIALOGUES_FILE.read_bytes()).hexdigest() and manifest.get(
        "config"
    ) == asdict(cfg)


def ensure_checkpoint(
    path: str | os.PathLike[str] | None = None,
    cfg: BuildConfig = BuildConfig(),
    progress: bool = True,
    use_bundled: bool = True,
) -> Path:
    """Return a checkpoint folder, materialising it first if it is missing.

    Default location: ``$EARMARK_HOME/models/offline-speech-policy-v0`` (EARMARK_HOME defaults to
    ``./.earmark``). A missing folder is copied from the shipped checkpoint when that matches
    (see ``bundled_is_current``), else built (about 80 s on two cores). Either way the files go to
    a temporary sibling that is renamed into place, so a crash never leaves a half-written
    checkpoint that later calls would trust.
    """
    target = Path(path) if path is not None else default_checkpoint_path()
    if is_complete(target):
        return target
    with _file_lock(target.with_name(target.name + ".lock")):
        if is_complete(target):  # another process finished while we waited
            return target
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        if use_bundled and target.resolve() != BUNDLED_DIR.resolve() and bundled_is_current(cfg):
            shutil.copytree(BUNDLED_DIR, tmp)
        else:
            build_checkpoint(tmp, cfg, progress=progress)
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    return target
