"""One prompt per task regime with three rollouts each, through the real services (real PostgreSQL,
real blobs): asr (user audio + reference transcript), tts (text to speak, rendered replies), realtime
(persona, spoken question, measured ttfa), duplex (timelines with tool calls on the action channel,
tool schemas) and reasoning (verifiable answer)."""

from __future__ import annotations

from typing import Any

from audio_util import tone

from earmark.domain.records import RewardModelCreate, RolloutCreate, ScoreCreate

ASR_TRUTH = "turn left at the old mill"
TTS_TEXT = "the library opens at nine"
TIMER_TOOL = {
    "name": "set_timer",
    "description": "Start a countdown timer",
    "parameters": {"type": "object", "properties": {"minutes": {"type": "integer"}}, "required": ["minutes"]},
}
FULL_SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "max_new_tokens": 48, "repetition_penalty": 1.0}
AI_PREF = (0.9, 0.5, 0.1)  # AI label scores by sample index: sample 0 > 1 > 2


def _timeline(user_sha: str, assistant_sha: str, minutes: int | None) -> dict[str, Any]:
    """A 3.2 s duplex session on the 160 ms clock; the reply (with its tool call) starts at chunk 9."""
    action: dict[str, Any] = {"chunk": 9, "label": "response", "plan": "user asked for a timer"}
    if minutes is not None:
        action["tool_calls"] = [{"name": "set_timer", "arguments": {"minutes": minutes}}]
    return {
        "chunk_ms": 160,
        "n_chunks": 20,
        "scenario": "normal",
        "user": {
            "audio_sha256": user_sha,
            "transcript": "set a timer for five minutes",
            "speech": [{"start": 0, "end": 8}],
        },
        "assistant": {"audio_sha256": assistant_sha, "speech": [{"start": 10, "end": 18}]},
        "actions": [action],
        "events": [{"type": "normal", "onset_s": 1.28, "expect": "respond"}],
    }


def seed_regimes(em) -> dict[str, Any]:
    def wav(seconds: float, hz: float) -> str:
        return em.blobs.put_waveform(tone(seconds, 16000, hz), 16000).sha256

    em.catalog.import_personas(
        [
            {
                "name": "librarian",
                "display_name": "Mara",
                "description": "a calm librarian",
                "style": "slow and low",
                "prosody": {"f0_mean_hz": 90},
            }
        ]
    )
    asr_audio, rt_audio, dx_user = wav(0.6, 200), wav(0.5, 230), wav(3.2, 180)
    rep = em.catalog.import_prompts(
        [
            {
                "external_id": "asr-1",
                "regime": "asr",
                "reference": {"text": ASR_TRUTH},
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "Transcribe the clip."},
                            {"type": "audio", "audio_sha256": asr_audio, "transcript": ASR_TRUTH},
                        ],
                    }
                ],
            },
            {
                "external_id": "tts-1",
                "regime": "tts",
                "persona": "librarian",
                "reference": {"text": TTS_TEXT},
                "messages": [{"role": "user", "content": f"Say: {TTS_TEXT}"}],
            },
            {
                "external_id": "rt-1",
                "regime": "realtime",
                "persona": "librarian",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "audio", "audio_sha256": rt_audio, "transcript": "what should I read next?"}
                        ],
                    }
                ],
            },
            {
                "external_id": "dx-1",
                "regime": "duplex",
                "tools": [TIMER_TOOL],
                "reference": {
                    "tool_calls": [{"name": "set_timer", "arguments": {"minutes": 5}}],
                    "events": [{"type": "normal", "onset_s": 1.28}],
                },
                "messages": [{"role": "user", "content": "Full-duplex session: the user asks for a timer."}],
            },
            {
                "external_id": "rs-1",
                "regime": "reasoning",
                "reference": {"answer": "42"},
                "messages": [{"role": "user", "content": "What is six times seven?"}],
            },
        ]
    )
    pol = em.catalog.register_policy("multi", "file:///ckpt")
    ids = rep.ids
    texts = {
        "asr-1": [ASR_TRUTH, "turn left at the old hill", "turn right at the mill"],
        "tts-1": [TTS_TEXT] * 3,  # same text, three renderings (token ids differ)
        "rt-1": ["Try a quiet novel.", "Read the news.", "Anything works."],
        "dx-1": ["Timer set for five minutes.", "Timer set for three minutes.", "Okay."],
        "rs-1": ["It is 42.", "It is 40, I think.", "Forty five."],
    }
    rows = []
    for ext, pid in ids.items():
        for s in range(3):
            sha = None if ext == "asr-1" else wav(0.4 + 0.1 * s, 150 + 40 * s)
            row: dict[str, Any] = dict(
                prompt_id=pid,
                policy_id=pol.id,
                sample_index=s,
                messages=[],
                text=texts[ext][s],
                token_ids=[7, 8, 10 + s],
                audio_sha256=sha,
                ttfa_s=(0.3, 1.25, 2.5)[s],
                # one asr rollout lacks a decoding setting the asr preset needs
                sampling={k: v for k, v in FULL_SAMPLING.items() if not (ext == "asr-1" and s == 2 and k == "top_k")},
            )
            if ext == "dx-1":
                row["timeline"] = _timeline(dx_user, sha, (5, 3, None)[s])
                # the action channel carries the calls; sample 1 also stores them on the rollout
                row["tool_calls"] = [{"name": "set_timer", "arguments": {"minutes": 3}}] if s == 1 else None
            rows.append(RolloutCreate(**row))
    keys = em.rollouts.ingest(rows)
    rollouts = {(ext, s): keys[(pid, pol.id, s, 0)] for ext, pid in ids.items() for s in range(3)}
    rm = em.scores.register_reward_model(
        RewardModelCreate(name="ai_pref", version="1", kind="learned", dimensions=["ai_pref"])
    )
    em.scores.ingest(
        [
            ScoreCreate(rollout_id=rid, reward_model_id=rm.id, dimension="ai_pref", score=AI_PREF[s])
            for (_, s), rid in rollouts.items()
        ]
    )
    return {
        "policy": pol,
        "prompts": ids,
        "rollouts": rollouts,
        "ai_rm": rm,
        "audio": {"asr_user": asr_audio, "rt_user": rt_audio, "dx_user": dx_user},
    }


def add_scores(em, name: str, dimension: str, by_rollout: dict[int, float]) -> None:
    """Scores of a stand-in reward model (e.g. human-rated feel aggregated per rollout)."""
    rm = em.scores.register_reward_model(
        RewardModelCreate(name=name, version="1", kind="learned", dimensions=[dimension])
    )
    em.scores.ingest(
        [ScoreCreate(rollout_id=r, reward_model_id=rm.id, dimension=dimension, score=v) for r, v in by_rollout.items()]
    )
