"""external_judgments: preferences imported from outside tools, with their source and annotator

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 04:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "external_judgments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("annotator", sa.String(length=200), nullable=True),
        sa.Column("prompt_id", sa.BigInteger(), nullable=False),
        sa.Column("rollout_a_id", sa.BigInteger(), nullable=False),
        sa.Column("rollout_b_id", sa.BigInteger(), nullable=False),
        sa.Column("dimension", sa.String(length=64), nullable=False),
        sa.Column("preference", sa.Double(), nullable=False),
        sa.Column("tie", sa.Boolean(), nullable=False),
        sa.Column("both_bad", sa.Boolean(), nullable=False),
        sa.Column("confidence", sa.Double(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("preference >= -1 AND preference <= 1", name=op.f("ck_external_judgments_preference_range")),
        sa.CheckConstraint("confidence IS NULL OR (confidence >= 0 AND confidence <= 1)",
                           name=op.f("ck_external_judgments_confidence_range")),
        sa.ForeignKeyConstraint(["prompt_id"], ["prompts.id"], name=op.f("fk_external_judgments_prompt_id_prompts")),
        sa.ForeignKeyConstraint(["rollout_a_id"], ["rollouts.id"],
                                name=op.f("fk_external_judgments_rollout_a_id_rollouts")),
        sa.ForeignKeyConstraint(["rollout_b_id"], ["rollouts.id"],
                                name=op.f("fk_external_judgments_rollout_b_id_rollouts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_judgments")),
        sa.UniqueConstraint("source", "external_id", name=op.f("uq_external_judgments_source_external_id")),
    )
    op.create_index("ix_external_judgments_prompt_id", "external_judgments", ["prompt_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_external_judgments_prompt_id", table_name="external_judgments")
    op.drop_table("external_judgments")
