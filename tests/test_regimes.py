"""Regime presets: one source of composition weights, scorers that exist, campaign defaults, the
latency scorer, `earmark regime list|show`, `earmark score --regime` and campaigns from a preset."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError
from regime_fixtures import FULL_SAMPLING, seed_regimes
from typer.testing import CliRunner

from earmark.cli.main import app
from earmark.domain.enums import Protocol, Role
from earmark.errors import InvalidInput
from earmark.regimes import PRESETS, RegimePreset, ScorerRef, check_scorers, get_preset
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from reward_models.base import REGIMES, ScoringInput, build_scorer, list_scorers
from reward_models.composition import RegimeWeights, RewardComposition
from reward_models.latency import latency_score

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})
ADMIN = Principal(None, "admin", Role.admin)


def test_one_preset_per_regime_and_composition_defaults_come_from_them() -> None:
    assert set(PRESETS) == set(REGIMES)
    comp = RewardComposition()
    for name, preset in PRESETS.items():
        # the default composition is built from the presets, and validates as RegimeWeights
        assert comp.regimes[name] == RegimeWeights.model_validate(preset.composition.model_dump())
    # realtime's latency is measured (verifiable part); duplex relies on turn-taking
    assert PRESETS["realtime"].composition.verifiable["latency"] > 0
    assert "turn_taking" in [s.name for s in PRESETS["duplex"].scorers]
    assert PRESETS["duplex"].campaign.protocol is Protocol.timeline
    assert PRESETS["asr"].composition.mix == 1.0 and not PRESETS["asr"].composition.preference
    # reasoning keeps verifiable correctness and human feel in separate parts
    r = PRESETS["reasoning"].composition
    assert "normalized_match" in r.verifiable and "human_preference" in r.preference and 0 < r.mix < 1


def test_presets_import_without_torch_or_reward_models() -> None:
    code = (
        "import sys, earmark.regimes as r; assert r.PRESETS; "
        "bad = [m for m in ('torch', 'ray', 'reward_models', 'earmark.store') if m in sys.modules]; "
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_every_preset_scorer_is_registered() -> None:
    """Passes once every scorer a preset names is registered (duplex's turn_taking comes from
    reward_models/duplex.py, which must also be listed in reward_models.base._BUILTIN_MODULES)."""
    registry = list_scorers()
    problems = [p for preset in PRESETS.values() for p in check_scorers(preset, registry)]
    assert problems == []


def test_check_scorers_names_the_missing_scorer_and_the_fix() -> None:
    registry = {"prosody": {"dimensions": ["prosody_match"]}, "tool_calls": {"dimensions": ["tool_call_accuracy"]}}
    problems = check_scorers(PRESETS["duplex"], registry)
    assert len(problems) == 1
    assert "'turn_taking'" in problems[0] and "not registered" in problems[0]
    assert "reward_models.duplex" in problems[0] and "--scorers" in problems[0]
    # optional scorers can be left out of the check (what `earmark score --regime` runs)
    assert check_scorers(PRESETS["duplex"], {"turn_taking": ["turn_taking_accuracy"]}, include_optional=False) == []
    wrong = {"turn_taking": {"dimensions": ["delay"]}, "tool_calls": ["tool_call_accuracy"]}
    assert "does not score ['turn_taking_accuracy']" in check_scorers(PRESETS["duplex"], wrong)[0]
    # the judge scores the dimensions its config names
    real = list_scorers()
    assert check_scorers(PRESETS["reasoning"], real) == []
    with pytest.raises(ValueError, match="unknown; use one of asr, tts"):
        get_preset("karaoke")


def test_preset_validation_refuses_unknown_exports_and_ratings() -> None:
    base = PRESETS["tts"].model_dump()
    with pytest.raises(ValidationError, match="export format"):
        RegimePreset.model_validate({**base, "export_formats": ["csv"]})
    with pytest.raises(ValidationError, match="rating dimension"):
        RegimePreset.model_validate({**base, "campaign": {**base["campaign"], "dimensions": ["vibes"]}})
    with pytest.raises(ValidationError, match="listed twice"):
        RegimePreset.model_validate({**base, "scorers": [base["scorers"][0], base["scorers"][0]]})
    assert PRESETS["asr"].missing_sampling(FULL_SAMPLING) == []
    assert PRESETS["asr"].missing_sampling({"temperature": 0.0}) == [
        "top_p",
        "top_k",
        "max_new_tokens",
        "repetition_penalty",
    ]
    assert PRESETS["tts"].missing_sampling({}) == []  # tts records nothing extra
    assert ScorerRef(name="x", dimensions=("d",)).optional is False


def test_latency_mapping_and_scorer() -> None:
    assert latency_score(0.0) == 1.0 and latency_score(0.5) == 1.0
    assert latency_score(1.25) == pytest.approx(0.5) and latency_score(2.0) == 0.0 and latency_score(9.0) == 0.0
    assert latency_score(1.0, good_s=0.0, bad_s=2.0) == pytest.approx(0.5)
    scorer = build_scorer("latency")
    [res] = scorer.score_one(ScoringInput(rollout_id=1, ttfa_s=0.875))
    assert res.dimension == "latency" and res.score == pytest.approx(0.75) and res.features["ttfa_s"] == 0.875
    with pytest.raises(ValueError, match="no ttfa_s"):
        scorer.score_one(ScoringInput(rollout_id=2))
    with pytest.raises(ValueError, match="good_s < bad_s"):
        build_scorer("latency", good_s=2.0, bad_s=1.0)
    with pytest.raises(ValueError, match="finite number"):
        latency_score(float("nan"))
    assert build_scorer("latency", bad_s=3.0).version != scorer.version


def test_regime_list_and_show_cli() -> None:
    res = runner.invoke(app, ["regime", "list"])
    assert res.exit_code == 0, res.output
    for name in REGIMES:
        assert name in res.output
    assert "turn_taking" in res.output and "timeline" in res.output
    res = runner.invoke(app, ["regime", "show", "asr", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["name"] == "asr" and data["scorers"][0]["name"] == "wer"
    assert data["scorers"][0]["config"] == {"transcribe_audio": False}
    assert data["composition"]["verifiable"] == {"transcript_accuracy": 1.0, "char_accuracy": 0.5}
    assert data["campaign"]["protocol"] == "pairwise" and data["campaign"]["overlap"] == 1
    assert "top_k" in data["required_sampling"] and "verl" in data["export_formats"]
    assert data["scorer_status"] == {"wer": "registered"} and data["problems"] == []
    res = runner.invoke(app, ["regime", "show", "realtime"])
    flat = " ".join(res.output.split())  # rich wraps long lines at the console width
    assert res.exit_code == 0 and "0.2 * verifiable + 0.8 * preference" in flat
    assert "verifiable [normalized_match 1, latency 0.5]" in flat  # weights printed, not eaten as markup
    res = runner.invoke(app, ["regime", "show", "karaoke"])
    assert res.exit_code == 2 and "karaoke" in res.output and "asr" in res.output


def test_score_regime_picks_preset_scorers_and_refuses_unregistered(monkeypatch) -> None:
    from earmark.cli import rm_cmds

    assert rm_cmds._scorer_specs(None, None) == [{"name": "prosody"}]  # unchanged without a preset
    assert rm_cmds._scorer_specs("wer,judge", None) == [{"name": "wer"}, {"name": "judge"}]
    assert rm_cmds._scorer_specs(None, "asr") == [{"name": "wer", "config": {"transcribe_audio": False}}]
    assert [s["name"] for s in rm_cmds._scorer_specs(None, "reasoning")] == ["answer_match", "judge"]  # no optional
    # explicit scorers with a preset: the preset's config for the ones it names
    assert rm_cmds._scorer_specs("wer,latency", "tts") == [
        {"name": "wer", "config": {"transcribe_audio": True, "self_reference": True}},
        {"name": "latency", "config": {}},
    ]
    with pytest.raises(InvalidInput, match="unknown"):
        rm_cmds._scorer_specs(None, "karaoke")
    # a preset scorer that is not registered is refused before anything runs, naming it and the fix
    fake = PRESETS["tts"].model_copy(
        update={
            "scorers": (ScorerRef(name="speaker_sim", dimensions=("similarity",), provided_by="reward_models.speaker"),)
        }
    )
    monkeypatch.setitem(PRESETS, "tts", fake)
    res = runner.invoke(app, ["score", "--regime", "tts"])
    assert res.exit_code == 2
    assert "speaker_sim" in res.output and "not registered" in res.output and "reward_models.speaker" in res.output


def test_scoring_job_with_a_preset_scores_only_its_regime(em) -> None:
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    world = seed_regimes(em)
    specs = [ScorerSpec(**s) for s in get_preset("asr").scorer_specs()]
    # wer on every rollout would fail: the realtime prompt has no reference text
    res = run_scoring_job(em, ScoringJobConfig(scorers=specs, regimes=["asr"]), progress=False, use_ray=False)
    assert res.rollouts == 3
    scores = em.scores.by_dimension(list(world["rollouts"].values()))
    acc = scores["wer/transcript_accuracy"]
    asr = [world["rollouts"][("asr-1", s)] for s in range(3)]
    assert set(acc) == set(asr)
    assert acc[asr[0]] == 1.0 and acc[asr[0]] > acc[asr[1]] > acc[asr[2]]  # one word off, then two
    # latency from the rollouts' ttfa_s, realtime only
    lat = [ScorerSpec(**s) for s in get_preset("realtime").scorer_specs() if s["name"] == "latency"]
    assert (
        run_scoring_job(em, ScoringJobConfig(scorers=lat, regimes=["realtime"]), progress=False, use_ray=False).rollouts
        == 3
    )
    got = em.scores.by_dimension(list(world["rollouts"].values()))["latency/latency"]
    assert [got[world["rollouts"][("rt-1", s)]] for s in range(3)] == [1.0, 0.5, 0.0]
    # decoding settings the asr preset needs: one asr rollout lacks top_k
    keys = get_preset("asr").required_sampling
    assert em.scores.lacking_sampling(keys, regimes=["asr"]) == 1
    assert em.scores.lacking_sampling(keys, regimes=["tts"]) == 0


def test_duplex_preset_scores_turn_taking_and_tool_calls(em) -> None:
    """The duplex preset's scorers on stored sessions: the reply at 1.44 s answers the user's turn end
    at 1.28 s; tool calls come from the action channel (minutes 5 right, 3 half right, none wrong)."""
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    world = seed_regimes(em)
    specs = [ScorerSpec(**s) for s in get_preset("duplex").scorer_specs(include_optional=True)]
    res = run_scoring_job(em, ScoringJobConfig(scorers=specs, regimes=["duplex"]), progress=False, use_ray=False)
    assert res.rollouts == 3
    got = em.scores.by_dimension(list(world["rollouts"].values()))
    dx = [world["rollouts"][("dx-1", s)] for s in range(3)]
    assert set(got["turn_taking/turn_taking_accuracy"]) == set(dx)
    assert got["turn_taking/turn_taking_accuracy"][dx[0]] == 1.0
    assert [got["tool_calls/tool_call_accuracy"][r] for r in dx] == [1.0, 0.5, 0.0]
    composed = RewardComposition().compose("duplex", {k.split("/")[1]: v[dx[0]] for k, v in got.items() if dx[0] in v})
    assert composed.verifiable == 1.0 and composed.preference is None


def test_campaign_from_a_preset(em) -> None:
    seed_regimes(em)
    spec = CampaignCreate(name="tts-ab", preset="tts")
    p = PRESETS["tts"].campaign
    assert (spec.protocol, spec.dimensions, spec.overlap, spec.gold_ratio) == (
        p.protocol,
        list(p.dimensions),
        p.overlap,
        p.gold_ratio,
    )
    assert spec.regime.value == "tts" and spec.instructions == p.instructions
    # the caller's values win over the preset's
    own = CampaignCreate(name="tts-mos", preset="tts", protocol="mos", overlap=5)
    assert own.protocol is Protocol.mos and own.overlap == 5 and own.dimensions == list(p.dimensions)
    # without a preset nothing changes
    plain = CampaignCreate(name="plain")
    assert plain.protocol is Protocol.pairwise and plain.regime is None and plain.instructions == ""
    with pytest.raises(ValidationError, match="karaoke"):
        CampaignCreate(name="x", preset="karaoke")
    camp = em.as_principal(ADMIN).campaigns.create(CampaignCreate(name="tts-live", preset="tts", max_items=3))
    assert camp.protocol == "pairwise" and camp.dimensions == ["prosody"] and camp.overlap == 3
    assert camp.selection["regime"] == "tts" and camp.selection["preset"] == "tts"
