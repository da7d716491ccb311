"""Exports in the chat-message form (earmark.domain.messages), per regime, and best-of-N SFT data from the CLI.

Real PostgreSQL, real blobs, real scorers (WER, answer match, latency); the snapshot is labelled by a
stand-in reward model's scores (AI labels, marked as such) so no raters are needed.
"""

from __future__ import annotations

import io
import json

import pytest
from regime_fixtures import ASR_TRUTH, TIMER_TOOL, TTS_TEXT, add_scores, seed_regimes
from typer.testing import CliRunner

from earmark import exports
from earmark.cli.main import app
from earmark.services.datasets import SNAPSHOT_SCHEMA_VERSION, SnapshotFilters
from earmark.services.labels import LabelConfig

runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _snapshot_rows(em, world):
    filters = SnapshotFilters(labels=LabelConfig(ai_fill=True, ai_reward_model_ids=[world["ai_rm"].id]))
    return em.datasets.rows(filters)[0], filters


def _by_regime(records, key="regime"):
    out = {}
    for r in records:
        out.setdefault(r[key], []).append(r)
    return out


def _parts(msg, kind):
    return [p for p in msg["content"] if p["type"] == kind]


def test_preference_exports_carry_each_regimes_content(em) -> None:
    world = seed_regimes(em)
    rows, _ = _snapshot_rows(em, world)
    assert {r["regime"] for r in rows} == {"asr", "tts", "realtime", "duplex", "reasoning"}
    trl = _by_regime(exports.convert(rows, "trl", "parts"))
    ro = world["rollouts"]

    # asr: the user's audio part, without its transcript (that is the label); the reference beside it
    asr = trl["asr"][0]
    user = asr["prompt"][-1]
    assert user["role"] == "user" and _parts(user, "audio") == [
        {"type": "audio", "audio_sha256": world["audio"]["asr_user"]}
    ]
    assert ASR_TRUTH not in json.dumps(asr["prompt"]) and asr["reference_text"] == ASR_TRUTH
    assert _parts(asr["chosen"][0], "audio") == [] and _parts(asr["chosen"][0], "text")
    # in the text form too, the transcript stays out of the prompt
    asr_text = _by_regime(exports.convert(rows, "trl"))["asr"][0]
    assert (
        ASR_TRUTH not in asr_text["prompt"][-1]["content"]
        and exports.AUDIO_PLACEHOLDER in asr_text["prompt"][-1]["content"]
    )

    # tts: the text to speak; the reply is the rendered audio (its transcript the spoken text)
    tts = trl["tts"][0]
    assert TTS_TEXT in json.dumps(tts["prompt"]) and tts["text_to_speak"] == TTS_TEXT
    [audio] = tts["chosen"][0]["content"]
    assert audio["type"] == "audio" and audio["transcript"] == TTS_TEXT and len(audio["audio_sha256"]) == 64
    assert audio["audio_sha256"] != tts["rejected"][0]["content"][0]["audio_sha256"]  # two renderings

    # realtime: persona card as the system message, spoken question as audio with transcript, reply text+audio
    rt = trl["realtime"][0]
    assert rt["prompt"][0]["role"] == "system" and "Mara" in rt["prompt"][0]["content"][0]["text"]
    assert _parts(rt["prompt"][1], "audio")[0] == {
        "type": "audio",
        "audio_sha256": world["audio"]["rt_user"],
        "transcript": "what should I read next?",
    }
    assert [p["type"] for p in rt["chosen"][0]["content"]] == ["text", "audio"]

    # duplex: tool calls from the action channel, the action channel with times, the user track, tools
    dx = {(r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]): r for r in trl["duplex"]}
    best = dx[("Timer set for five minutes.", "Timer set for three minutes.")]
    assert best["chosen"][0]["tool_calls"] == [{"name": "set_timer", "arguments": {"minutes": 5}}]
    assert best["rejected"][0]["tool_calls"] == [{"name": "set_timer", "arguments": {"minutes": 3}}]
    assert best["actions"] == [
        {
            "chunk": 9,
            "t_s": 1.44,
            "label": "response",
            "plan": "user asked for a timer",
            "tool_calls": [{"name": "set_timer", "arguments": {"minutes": 5}}],
        }
    ]
    assert best["tools"] == [TIMER_TOOL] and best["expected_tool_calls"][0]["arguments"] == {"minutes": 5}
    assert _parts(best["prompt"][-1], "audio")[0]["audio_sha256"] == world["audio"]["dx_user"]
    no_call = dx[("Timer set for three minutes.", "Okay.")]
    assert "tool_calls" not in no_call["rejected"][0]  # no call on the action channel: none invented
    assert trl["asr"][0]["actions"] is None and trl["tts"][0]["tools"] is None  # one schema for every record

    # reasoning: the verifiable answer kept beside the preferred reply
    assert {r["answer"] for r in trl["reasoning"]} == {"42"}

    # the other formats carry the same content
    orl = _by_regime(exports.convert(rows, "openrlhf", "parts"))
    assert orl["duplex"][0]["chosen"][-1]["tool_calls"] and orl["asr"][0]["reference_text"] == ASR_TRUTH
    nemo = _by_regime(exports.convert(rows, "nemo_rl", "parts"))
    assert nemo["tts"][0]["completions"][0]["completion"][0]["content"][0]["type"] == "audio"
    verl = {r["ability"]: r for r in exports.convert(rows, "verl")}
    assert set(verl) == {"asr", "tts", "duplex", "reasoning"}  # realtime has no verifiable reference
    assert (
        verl["asr"]["reward_model"]["ground_truth"] == ASR_TRUTH
        and verl["reasoning"]["reward_model"]["ground_truth"] == "42"
    )
    assert json.loads(verl["duplex"]["reward_model"]["ground_truth"]) == [
        {"arguments": {"minutes": 5}, "name": "set_timer"}
    ]
    assert verl["duplex"]["extra_info"]["tools"] == [TIMER_TOOL]
    assert ASR_TRUTH not in json.dumps(verl["asr"]["prompt"])
    ro_ids = {r["chosen_rollout_id"] for r in rows}
    assert ro[("asr-1", 0)] in ro_ids


def test_chat_sft_export_and_parquet_load(em) -> None:
    import datasets as hf_datasets
    import pyarrow.parquet as pq

    world = seed_regimes(em)
    rows, filters = _snapshot_rows(em, world)
    chat = exports.convert(rows, "chat")  # parts by default
    per = _by_regime(chat)
    # one conversation per distinct chosen rollout; asr teaches the reference transcript
    assert len({r["rollout_id"] for r in chat}) == len(chat)
    asr = per["asr"]
    assert all(
        r["target"] == "reference" and r["messages"][-1]["content"] == [{"type": "text", "text": ASR_TRUTH}]
        for r in asr
    )
    assert all(r["target"] == "chosen" for r in per["reasoning"])
    for r in chat:
        assert r["messages"][-1]["role"] == "assistant"
        assert all(isinstance(m["content"], list) for m in r["messages"])  # one content form: Arrow-friendly
    # Parquet round trip and Hugging Face datasets load the chat form unchanged
    back = pq.read_table(io.BytesIO(exports.write(chat, "parquet"))).to_pylist()
    assert [b["rollout_id"] for b in back] == [r["rollout_id"] for r in chat]
    dx = next(b for b in back if b["regime"] == "duplex" and b["rollout_id"] == world["rollouts"][("dx-1", 0)])
    assert dx["messages"][-1]["tool_calls"] == [{"name": "set_timer", "arguments": {"minutes": 5}}]
    ds = hf_datasets.Dataset.from_list(chat)  # columns from the first record: every record has them all
    assert set(ds.column_names) >= {"messages", "regime", "tools", "actions", "answer", "reference_text"}
    assert len(ds) == len(chat) and ds[len(chat) - 1]["answer"] == "42"
    # the frozen snapshot carries the chat columns itself (schema 2)
    snap = em.datasets.build("chat-src", filters)
    assert snap.manifest["schema_version"] == SNAPSHOT_SCHEMA_VERSION == 2
    assert {"prompt_chat", "tools", "chosen_timeline", "chosen_tool_calls"} <= set(snap.manifest["columns"])
    assert exports.convert(em.datasets.load(snap).to_pylist(), "chat") == chat
    with pytest.raises(ValueError, match="content form 'html' is unknown"):
        exports.convert(rows, "trl", "html")


@pytest.fixture
def cli_world(committed_em, server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    monkeypatch.setenv("EARMARK_BLOB_URL", (tmp_path / "blobs").as_uri())
    return committed_em, seed_regimes(committed_em)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def test_best_of_n_from_the_cli_by_a_chosen_composition(cli_world, tmp_path) -> None:
    from earmark.regimes import get_preset
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    em, world = cli_world
    ro = world["rollouts"]
    for regime in ("asr", "reasoning"):  # the presets' real verifiable scorers (no model weights needed)
        specs = [ScorerSpec(**s) for s in get_preset(regime).scorer_specs() if s["name"] in ("wer", "answer_match")]
        run_scoring_job(em, ScoringJobConfig(scorers=specs, regimes=[regime]), progress=False, use_ray=False)
    # human-rated feel for reasoning: the correct answer sounds worst
    add_scores(em, "feel", "naturalness", {ro[("rs-1", 0)]: 0.1, ro[("rs-1", 1)]: 0.9, ro[("rs-1", 2)]: 0.5})

    out = tmp_path / "asr.jsonl"
    res = runner.invoke(app, ["dataset", "export", "--format", "best_of_n", "--regime", "asr", "-o", str(out)])
    assert res.exit_code == 0, res.output
    [rec] = _jsonl(out)
    assert rec["rollout_id"] == ro[("asr-1", 0)] and rec["score"] == pytest.approx(1.0) and rec["n_candidates"] == 3
    assert rec["messages"][-1] == {"role": "assistant", "content": ASR_TRUTH} and rec["reference_text"] == ASR_TRUTH

    # the preset's reasoning composition (mix 0.5): correct answer 0.5*1 + 0.5*0.1 beats 0.5*0 + 0.5*0.9
    out = tmp_path / "reasoning.parquet"
    res = runner.invoke(
        app,
        ["dataset", "export", "--format", "best_of_n", "--regime", "reasoning", "--content", "parts", "-o", str(out)],
    )
    assert res.exit_code == 0, res.output
    import pyarrow.parquet as pq

    [rec] = pq.read_table(out).to_pylist()
    assert rec["rollout_id"] == ro[("rs-1", 0)] and rec["answer"] == "42"
    assert rec["score"] == pytest.approx(0.55) and rec["verifiable"] == 1.0 and rec["preference"] == pytest.approx(0.1)
    text_part, audio_part = rec["messages"][-1]["content"]  # Arrow fills absent struct fields with None
    assert (text_part["type"], text_part["text"]) == ("text", "It is 42.") and audio_part["type"] == "audio"
    assert audio_part["audio_sha256"] and rec["reference_text"] is None and rec["actions"] is None

    # a composition that weighs only the preference part picks the best-sounding reply instead
    from reward_models.composition import RegimeWeights, RewardComposition

    base = RewardComposition()
    feel_only = RewardComposition(
        name="feel-only",
        regimes={
            **base.regimes,
            "reasoning": RegimeWeights(verifiable={"normalized_match": 1.0}, preference={"naturalness": 1.0}, mix=0.0),
        },
    )
    comp_file = tmp_path / "feel.json"
    comp_file.write_text(feel_only.model_dump_json())
    out = tmp_path / "feel.jsonl"
    res = runner.invoke(
        app,
        [
            "dataset",
            "export",
            "--format",
            "best_of_n",
            "--regime",
            "reasoning",
            "--composition",
            str(comp_file),
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    [rec] = _jsonl(out)
    assert rec["rollout_id"] == ro[("rs-1", 1)] and rec["composition_version"].startswith("feel-only+")

    # a regime nobody scored: a clear error naming the fix
    res = runner.invoke(
        app, ["dataset", "export", "--format", "best_of_n", "--regime", "tts", "-o", str(tmp_path / "x.jsonl")]
    )
    assert res.exit_code == 2 and "earmark score --regime tts" in res.output
    res = runner.invoke(
        app, ["dataset", "export", "--format", "best_of_n", "--regime", "karaoke", "-o", str(tmp_path / "x.jsonl")]
    )
    assert res.exit_code == 2 and "karaoke" in res.output


def test_snapshot_exports_from_the_cli(cli_world, tmp_path) -> None:
    em, world = cli_world
    em.datasets.build(
        "multi", SnapshotFilters(labels=LabelConfig(ai_fill=True, ai_reward_model_ids=[world["ai_rm"].id]))
    )
    out = tmp_path / "chat.jsonl"
    res = runner.invoke(app, ["dataset", "export", "multi", "--format", "chat", "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = _jsonl(out)
    assert {r["regime"] for r in recs} == {"asr", "tts", "realtime", "duplex", "reasoning"}
    assert all(isinstance(r["messages"][-1]["content"], list) for r in recs)
    out = tmp_path / "trl.jsonl"
    res = runner.invoke(app, ["dataset", "export", "multi", "--format", "trl", "-o", str(out)])
    assert res.exit_code == 0 and all(isinstance(r["chosen"][0]["content"], str) for r in _jsonl(out))
    # best-of-N over a snapshot's prompts (all regimes, the default composition)
    add_scores(em, "feel", "naturalness", {rid: 0.1 * (1 + s) for (_, s), rid in world["rollouts"].items()})
    out = tmp_path / "bon.jsonl"
    res = runner.invoke(app, ["dataset", "export", "multi", "--format", "best_of_n", "-o", str(out)])
    assert res.exit_code == 0, res.output
    recs = _jsonl(out)
    # naturalness is weighted in every regime but asr; the most natural sample (index 2) wins there
    assert {r["regime"] for r in recs} == {"tts", "realtime", "duplex", "reasoning"}
    assert {r["rollout_id"] for r in recs} == {world["rollouts"][(e, 2)] for e in ("tts-1", "rt-1", "dx-1", "rs-1")}
    bad = runner.invoke(app, ["dataset", "export", "multi", "--format", "trl", "--regime", "asr", "-o", str(out)])
    assert bad.exit_code == 2 and "best_of_n" in bad.output
    bad = runner.invoke(app, ["dataset", "export", "--format", "trl", "-o", str(out)])
    assert bad.exit_code == 2 and "NAME" in bad.output
