"""Settings for every earmark process, read from ``EARMARK_*`` environment variables.

Nothing here touches the disk or the network: building a ``Settings`` only reads the environment,
so importing earmark stays free of side effects.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "EARMARK_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    home: Path = Field(
        default=Path(".earmark"),
        description="Data directory: embedded PostgreSQL, local blobs, model checkpoints, reports.",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the preference store, e.g. postgresql+psycopg://user:pw@host:5432/db. "
            "Unset: a private PostgreSQL is started from the pgserver wheel under EARMARK_HOME/pg."
        ),
    )
    auto_migrate: bool | None = Field(
        default=None,
        description=(
            "Migrate the store to the code's schema when a client connects. Unset: on for the embedded "
            "store, off for an external database (EARMARK_DATABASE_URL), where `earmark db upgrade` "
            "(a deploy step) migrates it and a client on an older schema stops with that advice."
        ),
    )
    blob_url: str | None = Field(
        default=None,
        description=(
            "Where audio and dataset blobs live: file:///abs/dir or s3://bucket/prefix. "
            "Unset: file://EARMARK_HOME/blobs. S3 credentials come from the usual AWS_* variables."
        ),
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint for non-AWS servers (MinIO, SeaweedFS), e.g. http://127.0.0.1:8333.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 region name passed to boto3.")
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster address (ray://host:10001 or host:6379). Unset: ray.init() locally.",
    )
    lease_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="Annotation task lease length; a heartbeat renews it while the rater works.",
    )
    login_max_failures: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Failed logins in a row for one user name from one client (device or address) before that pair waits.",
    )
    login_lockout_seconds: int = Field(
        default=300,
        ge=1,
        le=86400,
        description="How long a throttled client (for one name, or for all names) must wait before retrying.",
    )
    session_ttl_seconds: int = Field(
        default=8 * 3600, ge=60, description="How long an annotation app login stays valid."
    )
    serving_order: Literal["depth_first", "breadth_first"] = Field(
        default="depth_first",
        description=(
            "Order in which annotation slots are served: depth_first finishes an item's k judgments before "
            "opening new items; breadth_first gives every item its first judgment before any gets a second."
        ),
    )
    listen_min_real_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description=(
            "Minimum real (wall-clock) listening time per clip as a fraction of its duration before a rater may "
            "submit; 1.0 forbids any speed-up, 0.5 allows 2x playback, 0 turns the rule off."
        ),
    )
    trust_forwarded_for: bool = Field(
        default=False,
        description=(
            "Take the client address for login throttling from X-Forwarded-For (set only behind a proxy that "
            "overwrites that header, such as the ingress of infra/k8s)."
        ),
    )
    login_max_failures_per_client: int = Field(
        default=30,
        ge=1,
        le=10000,
        description="Failed logins from one client (device cookie or address) across all names before it waits.",
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "Key that signs the annotation app's session cookie; every replica must share it. Unset: a random key "
            "is generated once and kept in the database (table app_secrets), which all replicas read."
        ),
    )
    log_level: str = Field(default="INFO", description="Python logging level for earmark loggers.")

    @field_validator("blob_url")
    @classmethod
    def _check_blob_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        scheme = urlparse(v).scheme
        if scheme not in ("file", "s3"):
            raise ValueError(
                f"EARMARK_BLOB_URL scheme {scheme!r} is not supported; use file:///abs/dir or s3://bucket/prefix"
            )
        if scheme == "s3" and not urlparse(v).netloc:
            raise ValueError("EARMARK_BLOB_URL s3:// needs a bucket name, e.g. s3://earmark-blobs/prod")
        return v

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        raw = v.get_secret_value()
        if raw.startswith("sqlite"):
            raise ValueError("EARMARK_DATABASE_URL: SQLite is not supported; use a postgresql+psycopg:// URL")
        if not raw.startswith("postgresql"):
            raise ValueError(
                "EARMARK_DATABASE_URL must be a PostgreSQL URL such as postgresql+psycopg://user@host:5432/db"
            )
        return v

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    def migrates_on_connect(self) -> bool:
        return self.auto_migrate if self.auto_migrate is not None else self.database_url is None

    def resolved_blob_url(self) -> str:
        return self.blob_url or (self.home_dir / "blobs").as_uri()

    # ---- reward drift (earmark.drift): thresholds of stored alerts and `earmark drift report` ----
    drift_psi_warn: float = Field(
        default=0.1, ge=0, description="PSI at or above this is a moderate shift (shown, not alerted)."
    )
    drift_psi_alert: float = Field(
        default=0.25, gt=0, description="PSI at or above this raises a drift alert (significant shift)."
    )
    drift_pvalue: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="Significance level: a PSI, KS or mean-shift alert also needs its test's p-value below this.",
    )
    drift_ks_min_statistic: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="KS D must also reach this: with 100k scores a trivial shift is 'significant' by p alone.",
    )
    drift_mean_shift: float = Field(
        default=0.5, gt=0, description="Mean shift, in baseline standard deviations, that raises an alert."
    )
    drift_min_samples: int = Field(
        default=100,
        ge=2,
        description="Scores needed on each side before a dimension can raise an alert (10 per PSI bin).",
    )
    drift_hist_bins: int = Field(
        default=20, ge=2, le=200, description="Equal-width histogram bins (Jensen-Shannon and the charts)."
    )
    drift_psi_bins: int = Field(
        default=10, ge=2, le=100, description="PSI bins: quantiles of the baseline (10 = deciles)."
    )
    drift_hacking_corr: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="Reward-duration or reward-length correlation of the candidate that signals reward hacking.",
    )
    drift_hacking_corr_rise: float = Field(
        default=0.2, ge=0, le=2, description="...and how much it must have risen over the baseline's."
    )
    drift_judge_agreement_min: float = Field(
        default=0.6,
        ge=0,
        le=1,
        description="Generative judge vs human pairwise agreement below this in the latest window is flagged.",
    )
    drift_trap_verifiable_rise: float = Field(
        default=0.02, ge=0, description="Verifiable-reward trap: rise of the verifiable mean (0-1 scale) across rounds."
    )
    drift_trap_human_fall: float = Field(
        default=0.05,
        ge=0,
        description="Verifiable-reward trap: fall of the human naturalness/prosody/persona mean (0-1 scale).",
    )
    drift_window_hours: int = Field(
        default=24, ge=1, le=24 * 90, description="Width of the time windows in drift and rater-drift charts."
    )
    drift_bootstrap: int = Field(
        default=200,
        ge=20,
        le=10_000,
        description="Bootstrap resamples for leaderboard and drift-metric confidence intervals.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests build ``Settings(...)`` directly instead."""
    return Settings()
