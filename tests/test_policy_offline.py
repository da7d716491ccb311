"""The offline speech policy end to end: build, sample, speak, score (real model, real eSpeak)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.policy.base import Policy, SamplingParams
from pipelines.policy.offline.build import (
    BUNDLED_DIR,
    MANIFEST,
    BuildConfig,
    build_checkpoint,
    bundled_is_current,
    ensure_checkpoint,
)
from pipelines.policy.offline.corpus import load_dialogues, load_heldout, load_personas
from pipelines.policy.offline.markup import strip_controls, system_message
from pipelines.policy.offline.policy import OfflineSpeechPolicy

TINY = BuildConfig(steps=3, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, batch_size=4)


@pytest.fixture(scope="session")
def policy() -> OfflineSpeechPolicy:
    # The default cache ($EARMARK_HOME/models/...): copied from the shipped checkpoint on first use.
    return OfflineSpeechPolicy.from_pretrained(ensure_checkpoint(progress=False))


@pytest.fixture(scope="session")
def corpus_words() -> set[str]:
    words: set[str] = set()
    for d in load_dialogues():
        for m in d["messages"]:
            words.update(re.findall(r"[a-z']+", m["content"].lower()))
    return words


def _heldout(n: int) -> list[list[dict]]:
    return [h["messages"] for h in load_heldout()[:n]]


def test_build_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = build_checkpoint(tmp_path / "a", TINY, progress=False)
    build_checkpoint(tmp_path / "b", TINY, progress=False)
    build_checkpoint(tmp_path / "c", BuildConfig(**{**TINY.__dict__, "seed": 1}), progress=False)
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in "abc"]
    assert weights[0] == weights[1] and weights[0] != weights[2]
    assert a["params"] > 0 and (tmp_path / "a" / MANIFEST).is_file()
    tiny = OfflineSpeechPolicy.from_pretrained(tmp_path / "a")  # a valid checkpoint even if untrained
    assert tiny.generate(_heldout(1), SamplingParams(max_new_tokens=4))[0][0].token_ids


def test_shipped_checkpoint_matches_corpus_and_recipe(tmp_path: Path) -> None:
    # Fails when the corpus or BuildConfig changed without re-running
    # `python -m pipelines.policy.offline --out pipelines/data/offline-speech-policy-v0 --force`.
    assert bundled_is_current()
    target = ensure_checkpoint(tmp_path / "v0", progress=False)
    assert (target / "model.safetensors").read_bytes() == (BUNDLED_DIR / "model.safetensors").read_bytes()
    assert not bundled_is_current(BuildConfig(steps=1))


def test_ensure_checkpoint_builds_once(tmp_path: Path) -> None:
    target = tmp_path / "models" / "p"
    assert ensure_checkpoint(target, TINY, progress=False) == target
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    assert ensure_checkpoint(target, TINY, progress=False) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob("models/*.tmp-*"))


def test_policy_protocol_and_size(policy: OfflineSpeechPolicy) -> None:
    assert isinstance(policy, Policy)
    assert policy.name == "offline-speech-policy" and policy.version == "v0"
    assert 1_000_000 < sum(p.numel() for p in policy.model.parameters()) < 10_000_000


def test_generates_readable_speech_for_held_out_prompts(policy: OfflineSpeechPolicy, corpus_words: set[str]) -> None:
    threads = torch.get_num_threads()
    convs = _heldout(24)
    out = policy.generate(convs, SamplingParams(max_new_tokens=96), num_samples=1, seed=0)
    assert torch.get_num_threads() == threads  # the caller owns the thread count
    words = [w for ss in out for w in re.findall(r"[a-z']+", ss[0].text.lower())]
    known = sum(w in corpus_words for w in words) / len(words)
    assert known > 0.9, known
    for samples in out:
        s = samples[0]
        assert "<" not in s.text and len(s.text.split()) >= 3
        assert s.text == strip_controls(s.extra["markup"])
        assert s.audio is not None and s.audio.dtype == np.float32 and s.audio.ndim == 1
        assert s.sample_rate == 22050
        assert 0 < s.ttfa_s <= s.total_s
        duration = len(s.audio) / s.sample_rate
        # Duration matches what the segment plan renders to (eSpeak varies by a few samples).
        replay, sr, _ = policy.render(s.extra["markup"])
        assert abs(duration - len(replay) / sr) < 0.03 * duration + 0.05
        assert 0.5 < duration < 60 and np.sqrt(np.mean(s.audio**2)) > 0.01
        assert s.messages == [{"role": "assistant", "content": s.text, "markup": s.extra["markup"]}]


def test_same_seed_same_sample_regardless_of_batch(policy: OfflineSpeechPolicy) -> None:
    convs = _heldout(4)
    params = SamplingParams(max_new_tokens=40)
    a = policy.generate(convs, params, num_samples=2, seed=7)
    b = policy.generate(convs, params, num_samples=2, seed=7)
    alone = policy.generate(convs[2:3], params, num_samples=2, seed=7)
    c = policy.generate(convs, params, num_samples=2, seed=8)

    def ids(out):
        return [[s.token_ids for s in ss] for ss in out]

    assert ids(a) == ids(b)
    assert ids(alone)[0] == ids(a)[2]
    assert ids(a) != ids(c)
    assert all(x[0] != x[1] for x in ids(a)) or len({tuple(x[0]) for x in ids(a)}) > 1  # samples differ


def test_logprobs_of_responses(policy: OfflineSpeechPolicy) -> None:
    convs = _heldout(3)
    out = policy.generate(convs, SamplingParams(max_new_tokens=30), seed=1)
    responses = [ss[0].token_ids for ss in out]
    lps = policy.logprobs(convs, responses)
    assert [len(x) for x in lps] == [len(r) for r in responses]
    assert all(np.isfinite(v) and v <= 0 for x in lps for v in x)
    # The model prefers its own sample to the same tokens in reverse order.
    rev = policy.logprobs(convs, [r[::-1] for r in responses])
    assert all(sum(x) > sum(y) for x, y in zip(lps, rev))
    assert policy.logprobs(convs[:1], [[]]) == [[]]


def test_multi_turn_uses_history(policy: OfflineSpeechPolicy) -> None:
    greedy = SamplingParams(temperature=0.0, max_new_tokens=60)
    thanks = next(d for d in load_dialogues() if d["kind"] == "thanks")
    farewells = {f for p in load_personas() for f in p["farewells"]}
    conv = thanks["messages"][:-1]  # system, user, assistant, user("thanks")
    reply = policy.generate([conv], greedy)[0][0]
    assert reply.text in farewells  # answers the last turn, not the first question again
    # A sampled turn feeds back as history (its markup is kept) and the dialogue continues.
    first = policy.generate([conv[:2]], SamplingParams(max_new_tokens=80), seed=3)[0][0]
    follow = conv[:2] + first.messages + [{"role": "user", "content": "Can you say that more briefly?"}]
    second = policy.generate([follow], greedy)[0][0]
    assert second.text and second.text != first.text
    # Long histories are trimmed from the oldest turns, never failing.
    long_conv = conv[:1] + (conv[1:3] * 12) + [conv[-1]]
    assert policy.generate([long_conv], greedy)[0][0].text


def test_persona_card_steers_prosody(policy: OfflineSpeechPolicy) -> None:
    cards = {p["id"]: p for p in load_personas()}
    prompt = {"role": "user", "content": "How do I keep my houseplants alive?"}
    rates = {}
    for pid in ("librarian", "coach"):
        out = policy.generate(
            [[system_message(cards[pid]), prompt]], SamplingParams(max_new_tokens=4), num_samples=16, seed=0
        )
        rates[pid] = [s.extra["prosody"]["rate"][:1] for s in out[0]]
    assert sum(r == ["slow"] for r in rates["librarian"]) > sum(r == ["slow"] for r in rates["coach"])
    assert sum(r == ["fast"] for r in rates["coach"]) > sum(r == ["fast"] for r in rates["librarian"])


def test_save_and_reload_as_new_version(policy: OfflineSpeechPolicy, tmp_path: Path) -> None:
    path = policy.save(tmp_path / "v1", version="v1")
    again = OfflineSpeechPolicy.from_pretrained(path)
    assert again.version == "v1" and again.name == policy.name
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    convs = _heldout(2)
    assert [s[0].token_ids for s in again.generate(convs, params)] == [
        s[0].token_ids for s in policy.generate(convs, params)
    ]


def test_bad_inputs_name_the_fix(policy: OfflineSpeechPolicy, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ends with an assistant turn"):
        policy.generate([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]], SamplingParams())
    with pytest.raises(ValueError, match="num_samples"):
        policy.generate(_heldout(1), SamplingParams(), num_samples=0)
    with pytest.raises(FileNotFoundError, match="python -m pipelines.policy.offline "):
        OfflineSpeechPolicy.from_pretrained(tmp_path)


def test_sampled_control_bytes_never_reach_the_transcript(policy: OfflineSpeechPolicy) -> None:
    # Byte-level BPE: 0x00 and 0x07 are tokens 'Ā' and 'ć'. A hot policy (the demo trains at
    # temperature 1.3) can sample them; the store refuses NUL in text, so the policy drops them.
    tok = policy.tokenizer
    ids = tok(" Hello", add_special_tokens=False)["input_ids"]
    nul, bel = tok.convert_tokens_to_ids("Ā"), tok.convert_tokens_to_ids("ć")
    assert nul != tok.unk_token_id and bel != tok.unk_token_id
    sample = policy._finish(ids + [nul, bel] + ids, "stop", None, 0.0, seed=0, prompt_tokens=1, params=SamplingParams())
    assert "\x00" not in sample.text and "\x07" not in sample.text
    assert sample.text == "Hello Hello" or sample.text == "HelloHello"
