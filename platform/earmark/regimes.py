"""Regime presets: what each task regime (asr, tts, realtime, duplex, reasoning) scores, how it composes rewards, how people
annotate it and which exports make sense.

One preset per regime (asr, tts, realtime, duplex, reasoning). The reward-composition weights live
here and nowhere else: ``reward_models.composition`` builds its default weights from these presets,
so the CLI, the scoring job, PPO and the reward server all read the same numbers.

Pure data plus validation: this module imports pydantic and ``earmark.domain`` only (no torch, no
``reward_models``), so the CLI lists presets instantly. Checks that need the scorer registry take
the registry as an argument (``check_scorers``); the edges pass ``reward_models.list_scorers()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from earmark.domain.annotation import RATING_DIMENSIONS
from earmark.domain.enums import Protocol, Regime

# Export formats a preset may name: the snapshot converters of ``earmark.exports`` plus the two
# SFT forms (``chat``: chosen replies in the chat form of earmark.domain.messages; ``best_of_n``: the top-scored
# rollout per prompt by the preset's composition).
EXPORT_FORMATS = ("trl", "openrlhf", "verl", "nemo_rl", "chat", "best_of_n")
# Keys every rollout's ``sampling`` column has when it came through ``pipelines.rollouts``.
RECORDED_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_new_tokens", "repetition_penalty")


class ScorerRef(BaseModel):
    """A scorer by registry name, with the config the preset runs it with."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, description="registered scorer name (reward_models.base.list_scorers())")
    config: dict[str, Any] = Field(default_factory=dict, description="scorer config overriding its defaults")
    dimensions: tuple[str, ...] = Field(description="dimensions the preset relies on this scorer for")
    requires: tuple[str, ...] = Field(default=(), description="what each rollout needs, e.g. 'reference.text'")
    optional: bool = Field(
        default=False,
        description="not run by `earmark score --regime` (needs data not every prompt has); name it with --scorers",
    )
    provided_by: str = Field(default="", description="module that registers the scorer (for error messages)")


class CompositionWeights(BaseModel):
    """The regime's reward weights; ``reward_models.composition.RegimeWeights`` validates them
    (non-negative, each dimension in one part) when the default composition is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    verifiable: dict[str, float] = Field(default_factory=dict, description="dimension -> weight, verifiable part")
    preference: dict[str, float] = Field(default_factory=dict, description="dimension -> weight, preference part")
    mix: float = Field(ge=0.0, le=1.0, description="share of the verifiable part in the total")


class CampaignDefaults(BaseModel):
    """What `CampaignCreate(preset=...)` fills in when the caller leaves it out."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    protocol: Protocol
    dimensions: tuple[str, ...] = Field(description="per-item 1-5 ratings (earmark.domain.annotation)")
    overlap: int = Field(ge=1, le=50, description="raters per item (k)")
    gold_ratio: float = Field(ge=0, le=0.5, description="share of planted gold items (pairwise/cmos only)")
    instructions: str = Field(max_length=4000, description="what raters read before each item")

    @model_validator(mode="after")
    def _known_dimensions(self) -> CampaignDefaults:
        unknown = [d for d in self.dimensions if d not in RATING_DIMENSIONS]
        if unknown:
            raise ValueError(f"rating dimension(s) {unknown} are unknown; use {list(RATING_DIMENSIONS)}")
        return self


class RegimePreset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Regime
    summary: str
    scorers: tuple[ScorerRef, ...]
    composition: CompositionWeights
    human_signals: tuple[str, ...] = Field(description="what people contribute (becomes human_preference, events)")
    campaign: CampaignDefaults
    export_formats: tuple[str, ...]
    required_sampling: tuple[str, ...] = Field(default=(), description="keys each rollout's sampling must record")

    @model_validator(mode="after")
    def _consistent(self) -> RegimePreset:
        bad = [f for f in self.export_formats if f not in EXPORT_FORMATS]
        if bad:
            raise ValueError(f"preset {self.name}: export format(s) {bad} are unknown; use {list(EXPORT_FORMATS)}")
        names = [s.name for s in self.scorers]
        if len(names) != len(set(names)):
            raise ValueError(f"preset {self.name}: scorer listed twice in {names}; give each one entry")
        return self

    def scorer_specs(self, include_optional: bool = False) -> list[dict[str, Any]]:
        """``[{"name", "config"}]`` as ``pipelines.scoring_job.ScorerSpec`` takes them."""
        return [{"name": s.name, "config": dict(s.config)} for s in self.scorers if include_optional or not s.optional]

    def campaign_fields(self) -> dict[str, Any]:
        """CampaignCreate fields this preset fills (the caller's own values win)."""
        c = self.campaign
        return {
            "protocol": c.protocol.value,
            "dimensions": list(c.dimensions),
            "overlap": c.overlap,
            "gold_ratio": c.gold_ratio,
            "instructions": c.instructions,
            "regime": self.name,
        }

    def missing_sampling(self, sampling: Mapping[str, Any] | None) -> list[str]:
        """Decoding settings this regime needs recorded but the rollout's ``sampling`` lacks."""
        have = sampling or {}
        return [k for k in self.required_sampling if have.get(k) is None]


_ASR_INSTRUCTIONS = (
    "Both transcripts are of the same audio clip. Listen to the clip and choose the transcript closer to "
    "what is said: wrong, missing or extra words count most; punctuation and casing do not."
)
_TTS_INSTRUCTIONS = (
    "Both clips speak the same text in the same voice. Choose the one that sounds more natural and "
    "expressive for that text. Mispronounced, skipped or added words count against a clip."
)
_REALTIME_INSTRUCTIONS = (
    "Listen to both spoken replies to the same conversation. Choose the one that better stays in "
    "character (the persona card is shown), helps the user, and sounds natural to listen to."
)
_DUPLEX_INSTRUCTIONS = (
    "Play the user and assistant tracks on the time axis. Mark each bad interruption, missed "
    "backchannel, late response and wrong tool call at the moment it happens, with a short note."
)
_REASONING_INSTRUCTIONS = (
    "Both replies answer the same question. Choose the one you would rather hear: clear, natural and "
    "conversational. Rate correctness separately; a right answer that sounds robotic should not win on feel."
)

PRESETS: dict[str, RegimePreset] = {
    p.name: p
    for p in (
        RegimePreset(
            name="asr",
            summary="verifiable WER/CER against the reference transcript; decoding settings recorded per rollout",
            scorers=(
                ScorerRef(
                    name="wer",
                    config={"transcribe_audio": False},
                    dimensions=("transcript_accuracy", "char_accuracy"),
                    requires=("reference.text",),
                    provided_by="reward_models.verifiable",
                ),
            ),
            # The reference transcript decides; a preference part would only add noise.
            composition=CompositionWeights(verifiable={"transcript_accuracy": 1.0, "char_accuracy": 0.5}, mix=1.0),
            human_signals=("spot checks of transcripts (correctness)",),
            campaign=CampaignDefaults(
                protocol=Protocol.pairwise,
                dimensions=("correctness",),
                overlap=1,
                gold_ratio=0.1,
                instructions=_ASR_INSTRUCTIONS,
            ),
            export_formats=("verl", "chat", "best_of_n", "trl"),
            # WER moves with decoding (greedy vs sampled, multi-token/MTP): a reward without the settings
            # that produced it cannot be compared across runs.
            required_sampling=RECORDED_SAMPLING_KEYS,
        ),
        RegimePreset(
            name="tts",
            summary="human A/B on the same text and voice, prosody scorer, CER of the rendered audio",
            scorers=(
                ScorerRef(
                    name="prosody",
                    dimensions=("prosody_match",),
                    requires=("audio",),
                    provided_by="reward_models.prosody",
                ),
                # Whisper hears the rendered audio; the reference text is the text to speak (the
                # response text when a prompt has none).
                ScorerRef(
                    name="wer",
                    config={"transcribe_audio": True, "self_reference": True},
                    dimensions=("char_accuracy",),
                    requires=("audio",),
                    provided_by="reward_models.verifiable",
                ),
            ),
            composition=CompositionWeights(
                verifiable={"char_accuracy": 1.0},
                preference={"human_preference": 1.0, "prosody_match": 0.5, "naturalness": 0.5},
                mix=0.3,
            ),
            human_signals=("pairwise A/B preference (same text, same voice)", "prosody rating"),
            campaign=CampaignDefaults(
                protocol=Protocol.pairwise,
                dimensions=("prosody",),
                overlap=3,
                gold_ratio=0.1,
                instructions=_TTS_INSTRUCTIONS,
            ),
            export_formats=("trl", "openrlhf", "nemo_rl", "chat", "best_of_n"),
        ),
        RegimePreset(
            name="realtime",
            summary="generative judge for persona consistency and helpfulness, human preference, latency",
            scorers=(
                ScorerRef(
                    name="judge",
                    dimensions=("persona_consistency", "helpfulness", "naturalness"),
                    requires=("persona",),
                    provided_by="reward_models.judge",
                ),
                ScorerRef(
                    name="prosody",
                    dimensions=("prosody_match",),
                    requires=("audio",),
                    provided_by="reward_models.prosody",
                ),
                ScorerRef(
                    name="latency", dimensions=("latency",), requires=("ttfa_s",), provided_by="reward_models.latency"
                ),
            ),
            composition=CompositionWeights(
                # latency is measured, not judged: it sits in the verifiable part so a faster but
                # blander policy shows up as verifiable up, preference down (the trap, made visible).
                verifiable={"normalized_match": 1.0, "latency": 0.5},
                preference={
                    "human_preference": 1.0,
                    "persona_consistency": 1.0,
                    "helpfulness": 1.0,
                    "naturalness": 0.5,
                    "prosody_match": 0.5,
                },
                mix=0.2,
            ),
            human_signals=("pairwise preference on persona, helpfulness and naturalness",),
            campaign=CampaignDefaults(
                protocol=Protocol.pairwise,
                dimensions=("persona_consistency", "prosody", "correctness"),
                overlap=3,
                gold_ratio=0.1,
                instructions=_REALTIME_INSTRUCTIONS,
            ),
            export_formats=("trl", "openrlhf", "nemo_rl", "chat", "best_of_n"),
        ),
        RegimePreset(
            name="duplex",
            summary="turn-taking accuracy and delay, tool calls on the action channel, human timeline events",
            scorers=(
                ScorerRef(
                    name="turn_taking",
                    dimensions=("turn_taking_accuracy",),
                    requires=("timeline",),
                    provided_by="reward_models.duplex",
                ),
                ScorerRef(
                    name="tool_calls",
                    dimensions=("tool_call_accuracy",),
                    requires=("reference.tool_calls",),
                    optional=True,
                    provided_by="reward_models.verifiable",
                ),
            ),
            composition=CompositionWeights(
                verifiable={"turn_taking_accuracy": 1.0, "tool_call_accuracy": 1.0},
                preference={"human_preference": 1.0, "naturalness": 0.5},
                mix=0.6,
            ),
            human_signals=(
                "timeline events with onset times (bad interruption, missed backchannel, late response, "
                "wrong tool call)",
            ),
            campaign=CampaignDefaults(
                protocol=Protocol.timeline,
                dimensions=("correctness",),
                overlap=2,
                gold_ratio=0.0,
                instructions=_DUPLEX_INSTRUCTIONS,
            ),
            export_formats=("chat", "best_of_n", "trl"),
        ),
        RegimePreset(
            name="reasoning",
            summary="verifiable correctness kept beside human-rated conversational feel",
            scorers=(
                ScorerRef(
                    name="answer_match",
                    dimensions=("normalized_match",),
                    requires=("reference.answer",),
                    provided_by="reward_models.verifiable",
                ),
                ScorerRef(
                    name="judge",
                    config={"dimensions": ["naturalness", "helpfulness"]},
                    dimensions=("naturalness", "helpfulness"),
                    provided_by="reward_models.judge",
                ),
                ScorerRef(
                    name="tool_calls",
                    dimensions=("tool_call_accuracy",),
                    requires=("reference.tool_calls",),
                    optional=True,
                    provided_by="reward_models.verifiable",
                ),
            ),
            composition=CompositionWeights(
                verifiable={"normalized_match": 1.0, "tool_call_accuracy": 0.5},
                preference={"human_preference": 1.0, "naturalness": 1.0, "helpfulness": 0.5},
                mix=0.5,
            ),
            human_signals=("pairwise preference on conversational feel", "correctness rating kept apart"),
            campaign=CampaignDefaults(
                protocol=Protocol.pairwise,
                dimensions=("correctness", "prosody"),
                overlap=3,
                gold_ratio=0.1,
                instructions=_REASONING_INSTRUCTIONS,
            ),
            export_formats=("verl", "trl", "openrlhf", "nemo_rl", "chat", "best_of_n"),
        ),
    )
}


def get_preset(name: str) -> RegimePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"regime preset {name!r} is unknown; use one of {', '.join(PRESETS)}") from None


def check_scorers(
    preset: RegimePreset, registry: Mapping[str, Mapping[str, Any] | Sequence[str]], include_optional: bool = True
) -> list[str]:
    """Problems with the preset's scorers against a registry (``reward_models.list_scorers()``:
    name -> {"dimensions": [...]} or name -> [dimensions]); an empty list means all are usable."""
    problems = []
    for ref in preset.scorers:
        if ref.optional and not include_optional:
            continue
        entry = registry.get(ref.name)
        if entry is None:
            problems.append(
                f"scorer {ref.name!r} of preset {preset.name!r} is not registered (registered: "
                f"{', '.join(sorted(registry)) or 'none'}); it comes from {ref.provided_by or 'its module'}, "
                f"which this install does not load yet: update earmark, or pick registered scorers with --scorers"
            )
            continue
        dims = entry.get("dimensions", []) if isinstance(entry, Mapping) else list(entry)
        lacking = [d for d in ref.dimensions if d not in dims]
        # A scorer whose dimensions come from its config (the judge) is checked against its config.
        configured = ref.config.get("dimensions")
        if configured is not None:
            lacking = [d for d in lacking if d not in configured]
        if lacking:
            problems.append(
                f"scorer {ref.name!r} of preset {preset.name!r} does not score {lacking} "
                f"(it scores {list(dims)}); fix the preset's dimensions"
            )
    return problems


def describe(preset: RegimePreset) -> dict[str, Any]:
    """Everything the preset sets, as JSON-ready data (`earmark regime show --json`)."""
    return preset.model_dump(mode="json")


__all__ = [
    "EXPORT_FORMATS",
    "PRESETS",
    "CampaignDefaults",
    "CompositionWeights",
    "RegimePreset",
    "ScorerRef",
    "check_scorers",
    "describe",
    "get_preset",
]
