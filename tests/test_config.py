from __future__ import annotations

import pytest
from pydantic import ValidationError

from earmark.config import Settings


def test_every_field_is_described() -> None:
    missing = [name for name, f in Settings.model_fields.items() if not f.description]
    assert missing == []


def test_reads_earmark_prefix(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("EARMARK_HOME", str(tmp_path))
    monkeypatch.setenv("EARMARK_BLOB_URL", "s3://bucket/prefix")
    monkeypatch.setenv("EARMARK_RAY_ADDRESS", "ray://head:10001")
    monkeypatch.setenv("EARMARK_DATABASE_URL", "postgresql+psycopg://u:secretpw@h:5432/d")
    s = Settings()
    assert s.home_dir == tmp_path.resolve()
    assert s.resolved_blob_url() == "s3://bucket/prefix"
    assert s.ray_address == "ray://head:10001"
    assert "secretpw" not in repr(s) and "secretpw" not in str(s.model_dump())


def test_default_blob_dir_under_home(tmp_path) -> None:
    assert Settings(home=tmp_path).resolved_blob_url() == (tmp_path.resolve() / "blobs").as_uri()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("blob_url", "http://example/x", "file:///abs/dir or s3://bucket/prefix"),
        ("blob_url", "s3://", "bucket name"),
        ("database_url", "sqlite:///x.db", "SQLite is not supported"),
        ("database_url", "mysql://x", "PostgreSQL URL"),
        ("lease_seconds", 1, "greater than or equal to 10"),
    ],
)
def test_bad_settings_name_the_fix(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(**{field: value})
    assert needle in str(exc.value)
