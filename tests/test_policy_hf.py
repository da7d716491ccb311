"""HFCausalLMPolicy on real local folders: the offline checkpoint, and a tiny random Qwen2 whose
vocabulary has a fake audio-token range decoded by a toy codec (a sine tone per token)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hf_fixtures import save_tiny_qwen2

from pipelines.policy.base import Policy, SamplingParams
from pipelines.policy.hf import AudioTokenRange, HFCausalLMPolicy
from pipelines.policy.offline.build import ensure_checkpoint
from pipelines.policy.offline.corpus import load_heldout
from pipelines.policy.offline.policy import OfflineSpeechPolicy

AUDIO_TOKENS = 1024
HOP = 320  # samples per audio token at 16 kHz: 20 ms frames, like common speech codecs
SR = 16000


class SineCodec:
    """Toy audio-token decoder: token k of the range becomes 20 ms of a (200 + k) Hz tone."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __call__(self, token_ids: list[int]) -> tuple[np.ndarray, int]:
        t = np.arange(HOP) / SR
        frames = [0.3 * np.sin(2 * np.pi * (200 + i - self.start) * t) for i in token_ids]
        return np.concatenate(frames).astype(np.float32), SR


@pytest.fixture(scope="module")
def offline_dir() -> Path:
    return ensure_checkpoint(progress=False)


@pytest.fixture(scope="module")
def tiny_audio_lm(tmp_path_factory: pytest.TempPathFactory, offline_dir: Path) -> tuple[Path, int]:
    """A random Qwen2 saved with save_pretrained: text ids from the offline tokenizer, then audio ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(offline_dir)
    n_text = len(tok)
    path = tmp_path_factory.mktemp("tiny-audio-lm")
    tok.chat_template = None  # exercise the plain-transcript prompt for template-less models
    save_tiny_qwen2(path, tok, extra_vocab=AUDIO_TOKENS, tie_word_embeddings=True)
    return path, n_text


def test_offline_checkpoint_through_generic_adapter(offline_dir: Path) -> None:
    hf = HFCausalLMPolicy(offline_dir, version="v0")
    offline = OfflineSpeechPolicy.from_pretrained(offline_dir)
    assert isinstance(hf, Policy)
    convs = [h["messages"] for h in load_heldout()[:3]]
    # The saved chat template reproduces the policy's own prompt format exactly.
    assert [hf.prompt_ids(c) for c in convs] == [offline.prompt_ids(c) for c in convs]
    greedy = SamplingParams(temperature=0.0, max_new_tokens=40)
    a, b = hf.generate(convs, greedy), offline.generate(convs, greedy)
    assert [s[0].token_ids for s in a] == [s[0].token_ids for s in b]
    assert [s[0].text for s in a] == [s[0].text for s in b]  # prosody tokens stripped as special tokens
    s = a[0][0]
    assert s.extra["audio_source"] == "espeak" and s.sample_rate == 22050 and len(s.audio) > s.sample_rate // 2
    assert 0 < s.ttfa_s <= s.total_s
    resp = [x[0].token_ids for x in a]
    np.testing.assert_allclose(
        np.concatenate(hf.logprobs(convs, resp)), np.concatenate(offline.logprobs(convs, resp)), atol=1e-5
    )


def test_audio_tokens_go_through_the_decoder(tiny_audio_lm: tuple[Path, int]) -> None:
    path, n_text = tiny_audio_lm
    audio_range = AudioTokenRange(n_text, n_text + AUDIO_TOKENS)
    policy = HFCausalLMPolicy(path, audio_decoder=SineCodec(n_text), is_audio_token=audio_range)
    conv = [{"role": "system", "content": "You are a test voice."}, {"role": "user", "content": "Say something."}]
    assert policy.tokenizer.decode(policy.prompt_ids(conv)).endswith("User: Say something.\nAssistant:")
    out = policy.generate([conv, conv[1:]], SamplingParams(max_new_tokens=24), num_samples=2, seed=5)
    again = policy.generate([conv, conv[1:]], SamplingParams(max_new_tokens=24), num_samples=2, seed=5)
    assert [[s.token_ids for s in ss] for ss in out] == [[s.token_ids for s in ss] for ss in again]
    for samples in out:
        for s in samples:
            audio_ids = [i for i in s.token_ids if audio_range(i)]
            assert audio_ids and len(audio_ids) < len(s.token_ids)  # a random model mixes both kinds
            assert s.extra["audio_source"] == "audio_tokens" and s.extra["audio_tokens"] == len(audio_ids)
            assert s.sample_rate == SR and len(s.audio) == HOP * len(audio_ids)
            # The first frame is the tone of the first audio token (the decoder saw ids in order).
            spectrum = np.abs(np.fft.rfft(s.audio[:HOP], n=SR))
            assert abs(int(spectrum.argmax()) - (200 + audio_ids[0] - n_text)) <= 1
    lps = policy.logprobs([conv], [out[0][0].token_ids])
    assert len(lps[0]) == len(out[0][0].token_ids) and max(lps[0]) <= 0


def test_text_only_model_without_voice(tiny_audio_lm: tuple[Path, int]) -> None:
    path, _ = tiny_audio_lm
    policy = HFCausalLMPolicy(path, speak_text=False)  # audio ids decode as nothing, no eSpeak
    s = policy.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_new_tokens=8))[0][0]
    assert s.audio is None and s.sample_rate is None and s.extra["audio_source"] == "none"
    assert s.ttfa_s is not None and s.ttfa_s <= s.total_s  # time to first token


def test_adapter_errors_name_the_fix(tmp_path: Path, tiny_audio_lm: tuple[Path, int]) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        HFCausalLMPolicy(tmp_path)
    with pytest.raises(ValueError, match="is_audio_token"):
        HFCausalLMPolicy(tiny_audio_lm[0], audio_decoder=SineCodec(0))
    with pytest.raises(ValueError, match="start < stop"):
        AudioTokenRange(10, 5)
