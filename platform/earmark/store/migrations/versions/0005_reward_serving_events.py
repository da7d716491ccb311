"""reward service: named client tokens (hashed) and one serving event per served score

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 04:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reward_tokens",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reward_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_reward_tokens_name")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_reward_tokens_token_sha256")),
    )
    op.create_table(
        "serving_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("item_index", sa.Integer(), nullable=False),
        sa.Column("token_name", sa.String(length=200), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("global_step", sa.BigInteger(), nullable=True),
        sa.Column("sample_uid", sa.String(length=200), nullable=True),
        sa.Column("regime", sa.String(length=32), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("label", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("scorer_versions", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("composition_version", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("parts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.CheckConstraint("(score IS NULL) <> (error IS NULL)", name=op.f("ck_serving_events_score_or_error")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_events")),
    )
    op.create_index("ix_serving_events_run_step", "serving_events", ["run_id", "global_step"], unique=False)
    op.create_index("ix_serving_events_created_at", "serving_events", ["created_at"], unique=False)
    op.create_index("ix_serving_events_request", "serving_events", ["request_id", "item_index"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_serving_events_request", table_name="serving_events")
    op.drop_index("ix_serving_events_created_at", table_name="serving_events")
    op.drop_index("ix_serving_events_run_step", table_name="serving_events")
    op.drop_table("serving_events")
    op.drop_table("reward_tokens")
