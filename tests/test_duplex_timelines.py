"""Duplex sessions through JSONL and the real store: round trip, scoring, rendering, bad lines, CLI."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import truncate_all
from sqlalchemy import func, select
from typer.testing import CliRunner

from earmark.audio import decode, probe
from earmark.domain.duplex import Action, Timeline
from earmark.domain.enums import Role
from earmark.errors import InvalidInput, PermissionDenied
from earmark.security import Principal
from earmark.store.models import Blob, Policy, Prompt, Rollout
from pipelines.duplex.scenarios import generate_scenario, render_assistant
from pipelines.speech.espeak import wav_bytes


def _session(sc, source: str = "acme") -> dict:
    """A scenario line plus the assistant side a decent model would produce (real eSpeak audio)."""
    tl = sc.timeline
    normal = [e for e in tl.events if e.type == "normal"]
    if sc.assistant_turn:  # speak the scripted turn, stop 2 chunks after a barge-in, answer after it
        barge = next((e for e in tl.events if e.type == "interrupt"), None)
        cut = tl.seconds(tl.chunk_at(barge.onset_s) + 2) if barge else None
        turns = [(sc.assistant_turn.start_s, sc.assistant_turn.text, cut)]
        if barge:
            turns.append((tl.seconds(tl.chunk_at(normal[-1].onset_s) + 3), "Sure, here is the short version."))
    else:
        turns = [(tl.seconds(tl.chunk_at(normal[-1].onset_s) + 3), "Sure, let me help you with that.")]
    audio, spans = render_assistant(sc, turns)
    first = spans[0].start
    actions = [
        Action(chunk=first, label="response", tool_calls=sc.tool_calls).model_dump(mode="json", exclude_defaults=True)
    ]
    line = sc.session_record(source=source)
    line["timeline"]["assistant"] = {
        "base64": base64.b64encode(wav_bytes(audio, sc.sample_rate)).decode(),
        "transcript": " ".join(t[1] for t in turns),
        "speech": [s.model_dump() for s in spans],
    }
    line["timeline"]["actions"] = actions
    return line


def _write(path: Path, lines: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _as_stored(tl_json: dict, base_dir: Path) -> tuple[Timeline, dict[str, bytes]]:
    """A line's timeline with its audio named by sha256 (how the store keeps it), plus the bytes."""
    tl, audio = copy.deepcopy(tl_json), {}
    for side in ("user", "assistant"):
        track = tl.get(side) or {}
        data = (
            base64.b64decode(track.pop("base64"))
            if "base64" in track
            else (base_dir / track.pop("path")).read_bytes()
            if "path" in track
            else None
        )
        if data is not None:
            track["audio_sha256"] = hashlib.sha256(data).hexdigest()
            audio[track["audio_sha256"]] = data
    return Timeline.model_validate(tl), audio


def _counts(em) -> tuple[int, ...]:
    with em.session() as s:
        return tuple(s.scalar(select(func.count()).select_from(t)) for t in (Prompt, Rollout, Blob, Policy))


@pytest.fixture(scope="module")
def scenarios():
    return {
        k: generate_scenario(k, seed)
        for k, seed in (("normal", 1), ("interrupt", 3), ("tool_call", 4), ("pause", 2), ("backchannel", 5))
    }


def test_round_trip_through_jsonl_and_the_store(em, tmp_path, scenarios) -> None:
    lines = [_session(scenarios[k]) for k in ("normal", "interrupt", "tool_call", "backchannel")]
    lines.append(scenarios["pause"].session_record())  # a scenario without an assistant side
    # one user track given as a file path relative to the JSONL
    (tmp_path / "u.wav").write_bytes(base64.b64decode(lines[0]["timeline"]["user"].pop("base64")))
    lines[0]["timeline"]["user"]["path"] = "u.wav"
    src = _write(tmp_path / "sessions.jsonl", lines)

    rep = em.timelines.import_jsonl(src)
    assert (rep.lines, rep.prompts_added, rep.rollouts_added, rep.policies) == (5, 5, 4, ["external-acme"])
    expected = {line["id"]: _as_stored(line["timeline"], tmp_path) for line in lines}

    # stored rows: the scenario on the prompt, the whole session on the rollout, blobs byte-identical
    prompts = {p.external_id: p for p in em.catalog.prompts(regime="duplex")}
    assert set(prompts) == set(expected)
    for line in lines:
        tl, audio = expected[line["id"]]
        p = prompts[line["id"]]
        scen = tl.model_copy(update={"assistant": type(tl.assistant)(), "actions": []})
        assert Timeline.model_validate(p.reference["timeline"]) == scen
        assert p.reference["tool_calls"] == line["tool_calls"] and p.audio_sha256 == tl.user.audio_sha256
        assert p.messages[0]["content"][0]["transcript"] == tl.user.transcript
        for sha, data in audio.items():
            assert em.blobs.read(sha) == data
    policy = em.catalog.policy("external-acme", 0)
    rolls = {r.prompt_id: r for r in em.rollouts.list(policy_id=policy.id)}
    assert len(rolls) == 4
    tool_line = lines[2]
    r = rolls[prompts[tool_line["id"]].id]
    assert Timeline.model_validate(r.timeline) == expected[tool_line["id"]][0]
    assert r.tool_calls == tool_line["tool_calls"] and r.text and r.audio_sha256

    # export with audio inline gives back the very lines (equal timelines, identical audio bytes)
    out = em.timelines.export_jsonl(tmp_path / "out.jsonl", audio="base64")
    assert len(out) == 5 and (tmp_path / "out.jsonl").read_text().count("\n") == 5
    for exported in out:
        tl, audio = _as_stored(exported["timeline"], tmp_path)
        assert tl == expected[exported["id"]][0]
        assert audio == expected[exported["id"]][1]
    by_id = {x["id"]: x for x in out}
    assert by_id[lines[1]["id"]]["timeline"]["assistant"]["base64"] == lines[1]["timeline"]["assistant"]["base64"]
    assert by_id[lines[2]["id"]]["tool_calls"] == lines[2]["tool_calls"] and by_id[lines[2]["id"]]["tools"]
    assert by_id[lines[2]["id"]]["source"] == "acme" and "source" not in by_id[lines[4]["id"]]
    # sha export names the stored blobs; importing either export again adds nothing
    shas = em.timelines.export_jsonl(audio="sha")
    assert [Timeline.model_validate(x["timeline"]) for x in shas] == [expected[x["id"]][0] for x in shas]
    before = _counts(em)
    again = em.timelines.import_jsonl(tmp_path / "out.jsonl")
    assert (again.prompts_added, again.rollouts_added) == (0, 0) and _counts(em) == before
    again = em.timelines.import_jsonl(shas)
    assert (again.lines, again.prompts_added, again.rollouts_added) == (5, 0, 0) and _counts(em) == before


def test_scoring_job_scores_imported_sessions(em, tmp_path, scenarios) -> None:
    from pipelines.scoring_job import ScorerSpec, register, score_and_store

    lines = [_session(scenarios[k]) for k in ("normal", "interrupt", "tool_call", "backchannel")]
    em.timelines.import_jsonl(_write(tmp_path / "s.jsonl", lines))
    ids = [r.id for r in em.rollouts.list()]
    scorers = register(em, [ScorerSpec(name="turn_taking"), ScorerSpec(name="tool_calls")])
    added = score_and_store(em, scorers, ids)
    assert sorted(added.values()) == [4, 4]
    got = {(s.rollout_id, s.dimension): s for s in em.scores.for_rollouts(ids)}
    for rid in ids:
        tt = got[(rid, "turn_taking_accuracy")]
        # a model that answers, stops 2 chunks into a barge-in and rides over a backchannel gets every event right
        assert tt.score == 1.0, tt.rationale
        assert tt.features["n_events"] >= 1 and tt.features["mean_delay_s"] is not None
        assert got[(rid, "tool_call_accuracy")].score == 1.0  # [] == [] or the expected calls, from the action channel


def test_render_is_user_left_assistant_right(em, tmp_path, scenarios) -> None:
    sc = scenarios["interrupt"]
    line = _session(sc)
    em.timelines.import_jsonl(_write(tmp_path / "s.jsonl", [line]))
    (r,) = em.rollouts.list()
    wav = em.timelines.render_rollout(r.id)
    info = probe(wav)
    assert info.channels == 2 and info.duration_s == pytest.approx(sc.timeline.duration_s, abs=1e-3)
    stereo, _ = decode(wav)
    assistant, _ = decode(base64.b64decode(line["timeline"]["assistant"]["base64"]))
    assert np.abs(stereo[:, 0] - sc.user_audio).max() < 1e-3
    assert np.abs(stereo[:, 1] - assistant).max() < 1e-3
    with pytest.raises(Exception, match="no duplex timeline"):
        em.timelines.render_rollout(10**9)


BAD_LINES = {
    "bad json": (lambda line: '{"id": "x", "timeline": ', r"invalid JSON"),
    "span past end": (
        lambda line: _set(line, ["timeline", "user", "speech"], [{"start": 0, "end": 10_000}]),
        r"runs past the timeline",
    ),
    "span past audio": (
        lambda line: _set(
            _set(line, ["timeline", "n_chunks"], line["timeline"]["n_chunks"] + 60),
            ["timeline", "user", "speech"],
            [{"start": 2, "end": line["timeline"]["n_chunks"] + 50}],
        ),
        r"user speech span .* but the user audio lasts",
    ),
    "unknown scenario type": (lambda line: _set(line, ["timeline", "scenario"], "karaoke"), r"timeline\.scenario"),
    "unknown event type": (lambda line: _set(line, ["timeline", "events", 0, "type"], "laugh"), r"timeline\.events\.0"),
    "corrupt audio": (
        lambda line: _set(
            line,
            ["timeline", "assistant", "base64"],
            base64.b64encode(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(40)).decode(),
        ),
        r"assistant track: audio",
    ),
    "not base64": (lambda line: _set(line, ["timeline", "user", "base64"], "%%%"), r"not valid base64"),
    "no user audio": (lambda line: _set(line, ["timeline", "user", "base64"], None), r"user track has no audio"),
    "unknown blob": (
        lambda line: _set(
            _set(line, ["timeline", "user", "base64"], None), ["timeline", "user", "audio_sha256"], "0" * 64
        ),
        r"not in the blob store",
    ),
}


def _set(line: dict, path: list, value) -> dict:
    line = copy.deepcopy(line)
    node = line
    for k in path[:-1]:
        node = node[k]
    if value is None:
        node.pop(path[-1])
    else:
        node[path[-1]] = value
    return line


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_bad_line_is_named_and_nothing_is_written(em, tmp_path, scenarios, case) -> None:
    good, bad = _session(scenarios["normal"]), _session(scenarios["tool_call"])
    make, message = BAD_LINES[case]
    path = _write(tmp_path / "bad.jsonl", [good, make(bad)])
    blob_root = Path(em.settings.resolved_blob_url().removeprefix("file://"))
    before, files = _counts(em), sorted(blob_root.rglob("*")) if blob_root.exists() else []
    with pytest.raises(InvalidInput, match=message) as err:
        em.timelines.import_jsonl(path)
    assert f"{path}:2" in err.value.message
    assert "nothing was imported" in err.value.message or "invalid JSON" in err.value.message
    assert _counts(em) == before
    assert (sorted(blob_root.rglob("*")) if blob_root.exists() else []) == files


def test_every_bad_line_is_reported_and_ids_must_agree(em, tmp_path, scenarios) -> None:
    a, b = _session(scenarios["normal"]), _session(scenarios["pause"])
    clash = _set(b, ["id"], a["id"])  # same id, different scenario
    path = _write(
        tmp_path / "x.jsonl", [a, _set(a, ["timeline", "scenario"], "karaoke"), clash, _set(b, ["persona"], "nobody")]
    )
    with pytest.raises(InvalidInput) as err:
        em.timelines.import_jsonl(path)
    msg = err.value.message
    assert msg.startswith("3 invalid line(s)")
    assert f"{path}:2" in msg and f"{path}:3: id" in msg and "different scenario" in msg
    assert f"{path}:4: unknown persona 'nobody'" in msg
    assert _counts(em)[:2] == (0, 0)


def test_roles(em, tmp_path, scenarios) -> None:
    rater = em.as_principal(Principal(user_id=None, username="rita", role=Role.rater))
    with pytest.raises(PermissionDenied, match="may not catalog.write"):
        rater.timelines.import_jsonl(_write(tmp_path / "s.jsonl", [scenarios["normal"].session_record()]))
    with pytest.raises(PermissionDenied, match="may not data.read"):
        rater.timelines.export_jsonl()
    reviewer = em.as_principal(Principal(user_id=None, username="rev", role=Role.reviewer))
    assert reviewer.timelines.export_jsonl() == []


runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


@pytest.fixture
def cli_env(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    yield tmp_path
    truncate_all(server_url)


def test_cli_generate_import_export_metrics(cli_env, scenarios) -> None:
    from earmark.cli.main import app

    gen = cli_env / "gen.jsonl"
    res = runner.invoke(app, ["duplex", "generate", "--n", "6", "--seed", "3", "--out", str(gen)])
    assert res.exit_code == 0, res.output
    assert len(gen.read_text().splitlines()) == 6 and "backchannel 1" in res.output
    res = runner.invoke(app, ["duplex", "import", str(gen)])
    assert res.exit_code == 0 and "6 scenario prompts and 0 rollouts" in res.output, res.output
    sessions = _write(
        cli_env / "sessions.jsonl", [_session(scenarios[k]) for k in ("normal", "interrupt", "tool_call")]
    )
    res = runner.invoke(app, ["duplex", "import", str(sessions)])
    assert res.exit_code == 0 and "3 rollouts added" in res.output, res.output
    res = runner.invoke(app, ["duplex", "metrics", "--policy", "external-acme"])
    assert res.exit_code == 0, res.output
    assert "turn-taking: external-acme (3 rollouts)" in res.output
    cells = [[c.strip() for c in line.strip("│┃ ").split("│")] for line in res.output.splitlines()]
    rows = {c[0]: c[1:] for c in cells if c and c[0] in ("normal", "interrupt", "all")}
    assert rows["interrupt"][:2] == ["1", "1.000"] and rows["normal"][:2] == ["4", "1.000"]
    assert "trigger recall" in res.output
    out = cli_env / "out.jsonl"
    res = runner.invoke(app, ["duplex", "export", "--out", str(out), "--policy", "external-acme"])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 9  # 3 sessions + 6 scenarios alone
    prompts = cli_env / "prompts.jsonl"
    res = runner.invoke(
        app,
        [
            "duplex",
            "generate",
            "--n",
            "2",
            "--seed",
            "9",
            "--out",
            str(prompts),
            "--kinds",
            "pause",
            "--format",
            "prompt",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["prompts", "import", str(prompts)])
    assert res.exit_code == 0 and "2 added" in res.output, res.output
    res = runner.invoke(app, ["duplex", "generate", "--out", str(prompts), "--kinds", "chitchat"])
    assert res.exit_code == 2 and "unknown scenario kinds" in res.output
    bad = _write(cli_env / "bad.jsonl", ['{"id": "x"'])
    res = runner.invoke(app, ["duplex", "import", str(bad)])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
