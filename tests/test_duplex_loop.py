"""The offline loop on the duplex regime, end to end at small size, on real parts:

synthetic eSpeak NG scenarios (pipelines.duplex.scenarios) registered as duplex prompts -> the
rollout job on a local Ray runs the offline policy in duplex mode (K sessions per scenario, exactly
once) -> the turn-taking scorer scores every session timeline against the scenario's labelled
events -> AI-feedback preference labels from those scores -> a frozen snapshot -> DPO -> policy v1
registered, which runs a duplex session itself. Each stage's rows are checked, not just that it ran.
"""

from __future__ import annotations

import json
import math

import pytest

from earmark.audio import decode
from earmark.domain.duplex import Timeline
from earmark.services.datasets import SnapshotFilters
from earmark.services.labels import LabelConfig
from earmark.services.training import TrainingService
from pipelines.duplex.policy import CUE_QUIET
from pipelines.duplex.rollouts import DEFAULT_SETTINGS
from pipelines.rollout_job import RolloutJobConfig, run_rollout_job

pytestmark = pytest.mark.slow

KINDS = ("normal", "pause", "interrupt", "backchannel")
SEEDS = (1, 2)
SAMPLES = 4
MAX_NEW_TOKENS = 40


def test_duplex_loop_rollouts_scores_preferences_dpo(committed_em, checkpoint, ray_local) -> None:
    from pipelines.duplex.scenarios import generate_scenario

    em = committed_em
    scenarios = {sc.id: sc for sc in (generate_scenario(k, s) for k in KINDS for s in SEEDS)}
    ids = em.catalog.import_prompts([sc.prompt_record() for sc in scenarios.values()]).ids
    base = em.catalog.register_policy("offline-speech", checkpoint.as_uri(), kind="offline")

    # -- rollouts: the real job, duplex prompts through the duplex runner, exactly once ----------
    cfg = RolloutJobConfig(
        policy="offline-speech",
        regime="duplex",
        samples=SAMPLES,
        actors=1,
        batch_size=8,
        max_new_tokens=MAX_NEW_TOKENS,
        seed=3,
    )
    res = run_rollout_job(em, cfg, progress=False)
    n = len(scenarios) * SAMPLES
    assert (res.planned, res.written) == (n, n)
    again = run_rollout_job(em, cfg, progress=False)
    assert (again.planned, again.skipped_existing) == (0, n)
    rows = em.rollouts.list(policy_id=base.id)
    assert len(rows) == n
    ext = {v: k for k, v in ids.items()}
    outcomes: dict[str, int] = {}
    for r in rows:
        sc = scenarios[ext[r.prompt_id]]
        tl = Timeline.model_validate(r.timeline)
        # the scenario's user side and labelled events, the policy's assistant side
        assert tl.user.audio_sha256 == sc.timeline.user.audio_sha256 and tl.events == sc.timeline.events
        assert tl.n_chunks >= sc.timeline.n_chunks and tl.chunk_ms == 160
        assert tl.assistant.audio_sha256 == r.audio_sha256  # audio_sha256 is the assistant track (mono)
        audio, sr = decode(em.blobs.read(r.audio_sha256))
        assert (
            audio.ndim == 1 and abs(len(audio) / sr - tl.duration_s) < 1e-3 and abs(r.duration_s - tl.duration_s) < 1e-3
        )
        assert r.sampling["max_new_tokens"] == MAX_NEW_TOKENS and r.sampling["duplex"] == DEFAULT_SETTINGS.as_dict()
        assert r.seed is not None
        # the row's prompt is the first decision's context; its token_ids are the whole session
        assert [m["role"] for m in r.messages] == ["user", "assistant"]
        assert r.messages[0]["content"].endswith(CUE_QUIET)
        token_part = next(p for p in r.messages[1]["content"] if p["type"] == "token")
        assert token_part["ids"] == r.token_ids
        duplex = tl.meta["duplex"]
        decided = sum(b - a for a, b in (d["tokens"] for d in duplex["decisions"]))
        observed = sum(b - a for a, b in duplex["observation_spans"])
        assert decided + observed == len(r.token_ids) and len(duplex["decisions"]) >= 1
        for d in duplex["decisions"]:
            outcomes[d["outcome"]] = outcomes.get(d["outcome"], 0) + 1
        said = [a for a in tl.actions if a.label in ("response", "backchannel", "interrupt")]
        assert bool(said) == bool(tl.assistant.speech) and (r.text != "") == bool(said)
    # K samples of one scenario are K different sessions, and the decisions vary across them
    # (two sessions coincide only when both chose silence throughout: nothing was sampled to differ in)
    groups = _by_prompt(rows, lambda r: r)
    for group in groups.values():
        assert len({r.seed for r in group}) == SAMPLES
        seqs = [tuple(r.token_ids) for r in group]
        assert all(r.text == "" for r in group if seqs.count(tuple(r.token_ids)) > 1)
    assert sum(len({tuple(r.token_ids) for r in g}) > 1 for g in groups.values()) >= len(groups) - 1
    assert outcomes.get("respond", 0) > 0 and len(outcomes) >= 3, outcomes

    # -- scores: turn-taking accuracy of every session against its scenario's events ------------
    from pipelines.scoring_job import ScorerSpec, ScoringJobConfig, run_scoring_job

    run_scoring_job(em, ScoringJobConfig(scorers=[ScorerSpec(name="turn_taking")]), progress=False, use_ray=False)
    rm = em.scores.reward_model_id("turn_taking")
    scores = {s.rollout_id: s for s in em.scores.for_rollouts([r.id for r in rows]) if s.reward_model_id == rm}
    assert set(scores) == {r.id for r in rows}
    for r in rows:
        s = scores[r.id]
        assert s.dimension == "turn_taking_accuracy" and 0.0 <= s.score <= 1.0
        assert len(s.features["events"]) == len(scenarios[ext[r.prompt_id]].timeline.events)
    spread = [max(v) - min(v) for v in _by_prompt(rows, lambda r: scores[r.id].score).values()]
    assert sum(x > 0 for x in spread) >= 2, "sessions of a scenario must differ in score for preferences to exist"

    # -- preferences and snapshot: AI labels from the turn-taking scores ------------------------
    ds = em.datasets.build(
        "duplex-turn-taking",
        SnapshotFilters(
            regimes=["duplex"],
            labels=LabelConfig(
                ai_fill=True, ai_reward_model_ids=[rm], ai_dimensions=["turn_taking_accuracy"], ai_min_gap=0.05
            ),
        ),
    )
    snap = em.datasets.load(ds).to_pylist()
    assert ds.row_count == len(snap) >= 4
    by_id = {r.id: r for r in rows}
    from pipelines.policy.offline.policy import OfflineSpeechPolicy
    from pipelines.training.data import pairs_from_rows, policy_token_info, response_ids

    v0 = OfflineSpeechPolicy.from_pretrained(checkpoint)
    pairs = pairs_from_rows(snap, v0)
    end_id, stops, _ = policy_token_info(v0)
    for row, pair in zip(snap, pairs, strict=True):
        c, rj = by_id[row["chosen_rollout_id"]], by_id[row["rejected_rollout_id"]]
        assert row["label_source"] == "ai" and row["regime"] == "duplex"
        assert scores[c.id].score - scores[rj.id].score >= 0.05  # the better turn-taker is chosen
        assert row["chosen_ids"] == c.token_ids and row["rejected_ids"] == rj.token_ids
        # DPO scores exactly the sequence the session sampled: same prompt ids, same session ids
        assert pair.prompt == v0.prompt_ids(c.messages[:1], MAX_NEW_TOKENS)
        assert pair.chosen == response_ids(c.token_ids, end_id, stops)
        assert json.loads(row["prompt_messages"])[0]["content"] == c.messages[0]["content"]

    # -- DPO -> policy v1 --------------------------------------------------------------------
    from pipelines.loop import train_dpo_round

    v1, metrics = train_dpo_round(em, base, ds, em.settings, epochs=2, batch_size=4, threads=1)
    run = TrainingService(em.ctx).get(v1.training_run_id)
    assert run.status == "succeeded" and run.dataset_id == ds.id and run.output_policy_id == v1.id
    assert v1.version == 1 and v1.parent_id == base.id and v1.name == base.name
    assert math.isfinite(metrics["loss"]) and len(run.metrics) >= 2
    assert run.metrics[0]["loss"] == pytest.approx(math.log(2), abs=0.01)  # starts at the reference
    # DPO moved the decisions themselves: on the decision tokens (the waits and the first act of each
    # decision) v1 gained log-probability on the chosen sessions relative to the rejected ones
    from pipelines.duplex.policy import DuplexRunner
    from pipelines.duplex.rollouts import user_spans
    from pipelines.policy.base import SamplingParams
    from pipelines.policy.loader import load_policy

    v1_policy = load_policy("offline", v1.uri)
    gains = []
    for row in snap:
        gain = []
        for rid in (row["chosen_rollout_id"], row["rejected_rollout_id"]):
            ro = by_id[rid]
            pos = [
                a + i
                for d in ro.timeline["meta"]["duplex"]["decisions"]
                for a in [d["tokens"][0]]
                for i in range(d["wait_chunks"] + 1)
            ]
            lp0, lp1 = (p.logprobs([ro.messages[:1]], [ro.token_ids])[0] for p in (v0, v1_policy))
            gain.append(sum(lp1[i] - lp0[i] for i in pos))
        gains.append(gain[0] - gain[1])
    decision_margin = sum(gains) / len(gains)
    print(
        f"\nduplex loop: {n} sessions, decisions {outcomes}, mean turn-taking accuracy "
        f"{sum(x.score for x in scores.values()) / n:.3f}, {len(snap)} AI-labelled pairs, DPO {len(run.metrics)} steps "
        f"loss {run.metrics[0]['loss']:.3f} -> {metrics['loss']:.3f}; decision-token log-prob margin gained "
        f"{decision_margin:+.3f} (chosen minus rejected, v1 minus v0; {sum(g > 0 for g in gains)}/{len(gains)} pairs > 0)"
    )
    assert decision_margin > 0
    # the new version runs duplex sessions like v0
    sc = next(iter(scenarios.values()))
    out = DuplexRunner(v1_policy, DEFAULT_SETTINGS).run(
        [], user_spans(sc.timeline), sc.timeline, SamplingParams(max_new_tokens=MAX_NEW_TOKENS), seed=0
    )
    assert out.decisions and out.token_ids


def _by_prompt(rows, value):
    out: dict[int, list] = {}
    for r in rows:
        out.setdefault(r.prompt_id, []).append(value(r))
    return out
