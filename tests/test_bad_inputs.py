"""The bad-input corpus fed to every entry point: a clear error each time, the store unchanged."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from annotation_fixtures import make_user, seed_rollouts
from conftest import truncate_all
from sqlalchemy import text
from typer.testing import CliRunner

from earmark.cli.main import app
from earmark.domain.enums import Role
from earmark.domain.records import ScoreCreate
from earmark.errors import InvalidInput
from earmark.security import Principal
from earmark.services.campaigns import CampaignCreate
from earmark.store.models import Base

CORPUS = Path(__file__).parent / "data" / "bad_inputs"
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

BAD_AUDIO = {
    "truncated.wav": "truncated",
    "corrupt_header.wav": "could not be decoded",
    "wrong_sample_rate.wav": "sample rate 4000 Hz",
    "huge_declared_size.wav": "truncated",
    "not_audio.wav": "could not be decoded",
    "empty.wav": "too short",
}
BAD_PROMPT_FILES = {
    "invalid_utf8.jsonl": "not valid UTF-8",
    "unknown_enum.jsonl": "regime",
    "unknown_role.jsonl": "role",
    "huge_string.jsonl": "limit is 20000",
    "sql_in_ids.jsonl": "external_id",
    "nul_bytes.jsonl": "NUL byte",
    "not_json.jsonl": "invalid JSON",
}
BAD_PERSONA_FILES = {"persona_bad_prosody.jsonl": "f0_mean_hz", "persona_html_name.jsonl": "name"}
BAD_RATINGS = {
    "nan_rating.json": "prosody",
    "out_of_range_rating.json": "out of range",
    "negative_strength.json": "strength",
    "unknown_choice.json": "choice",
    "unknown_dimension.json": "vibes",
    "huge_rationale.json": "rationale",
    "extra_field.json": "policy",
    "negative_listen.json": "listen_ms",
}
BAD_SCORES = {"nan_score.json": "finite", "inf_score.json": "finite", "bad_dimension.json": "dimension"}


def fingerprint(em) -> dict[str, int]:
    with em.session() as s:
        return {t.name: s.scalar(text(f'SELECT count(*) FROM "{t.name}"')) for t in Base.metadata.sorted_tables}


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_AUDIO.items()))
def test_bad_audio_upload(em, name, needle) -> None:
    before = fingerprint(em)
    with pytest.raises(InvalidInput, match=needle) as exc:
        em.blobs.put_audio((CORPUS / name).read_bytes())
    assert any(w in exc.value.message for w in ("upload", "re-export", "resample", "split"))  # names the fix
    assert fingerprint(em) == before
    assert list(em.ctx.blobs.iter_digests()) == []  # not even the bytes were kept


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_AUDIO.items()))
def test_bad_audio_in_prompt_import(em, tmp_path, name, needle) -> None:
    (tmp_path / name).write_bytes((CORPUS / name).read_bytes())
    f = tmp_path / "p.jsonl"
    f.write_text(
        json.dumps(
            {
                "external_id": "a",
                "regime": "asr",
                "messages": [{"role": "user", "content": [{"type": "audio", "path": name}]}],
            }
        )
        + "\n"
    )
    before = fingerprint(em)
    with pytest.raises(InvalidInput, match=needle):
        em.catalog.import_prompts(f)
    assert fingerprint(em) == before


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_PROMPT_FILES.items()))
def test_bad_prompt_files(em, name, needle) -> None:
    before = fingerprint(em)
    with pytest.raises(InvalidInput, match=needle):
        em.catalog.import_prompts(CORPUS / name)
    assert fingerprint(em) == before


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_PERSONA_FILES.items()))
def test_bad_persona_files(em, name, needle) -> None:
    before = fingerprint(em)
    with pytest.raises(InvalidInput, match=needle):
        em.catalog.import_personas(CORPUS / name)
    assert fingerprint(em) == before


def test_html_in_prompt_text_is_kept_as_data(em) -> None:
    """User text is data: stored verbatim (escaping happens where it is shown, see the UI tests)."""
    em.catalog.import_prompts(CORPUS / "html_prompt.jsonl")
    [p] = em.catalog.prompts()
    assert p.messages[0]["content"].startswith("<script>")


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_RATINGS.items()))
def test_bad_rating_forms(em, name, needle) -> None:
    seed_rollouts(em)
    camp = em.as_principal(Principal(None, "a", Role.admin)).campaigns.create(
        CampaignCreate(name="c", overlap=1, gold_ratio=0)
    )
    rita = em.as_principal(make_user(em, "rita"))
    le = rita.tasks.claim(camp.id, want=1)[0]
    before = fingerprint(em)
    with pytest.raises(InvalidInput, match=needle):
        rita.tasks.submit(le.task_id, le.lease_token, uuid.uuid4(), json.loads((CORPUS / name).read_text()))
    assert fingerprint(em) == before


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_SCORES.items()))
def test_bad_scores(em, name, needle) -> None:
    before = fingerprint(em)
    with pytest.raises(ValueError, match=needle):
        ScoreCreate.model_validate(json.loads((CORPUS / name).read_text()))
    assert fingerprint(em) == before


@pytest.fixture
def cli_env(server_url, tmp_path, monkeypatch):
    monkeypatch.setenv("EARMARK_DATABASE_URL", server_url)
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    yield tmp_path
    truncate_all(server_url)


@pytest.mark.parametrize(("name", "needle"), sorted(BAD_PROMPT_FILES.items()))
def test_bad_prompt_files_via_cli(cli_env, name, needle) -> None:
    result = runner.invoke(app, ["prompts", "import", str(CORPUS / name)])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["rollout", "--policy", "x", "--samples", "1000"],
        ["rollout", "--policy", "x", "--actors", "0"],
        ["rollout", "--policy", "1'; DROP TABLE policies;--"],
        ["dataset", "export", "d", "--format", "csv", "--out", "x.csv"],
        ["users", "add", "bob", "--role", "superuser", "--password", "longenough1"],
        ["db", "downgrade", "--revision", "nonexistent"],
    ],
)
def test_bad_cli_arguments(cli_env, args) -> None:
    import earmark
    from earmark.config import Settings

    em = earmark.connect(Settings())
    before = fingerprint(em)
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert fingerprint(em) == before
    em.close()


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("EARMARK_BLOB_URL", "ftp://x/y", "EARMARK_BLOB_URL"),
        ("EARMARK_DATABASE_URL", "sqlite:///x.db", "SQLite"),
        ("EARMARK_LEASE_SECONDS", "-5", "EARMARK_LEASE_SECONDS"),
        ("EARMARK_LEASE_SECONDS", "abc", "EARMARK_LEASE_SECONDS"),
    ],
)
def test_bad_config(monkeypatch, var, value, needle) -> None:
    monkeypatch.setenv(var, value)
    result = runner.invoke(app, ["db", "current"])
    assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output
