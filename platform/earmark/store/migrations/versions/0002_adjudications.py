"""adjudications: reviewers' decided labels for disputed comparisons

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 10:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "adjudications",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("comparison_id", sa.BigInteger(), nullable=False),
        sa.Column("reviewer_id", sa.BigInteger(), nullable=False),
        sa.Column("choice", sa.String(length=16), nullable=False),
        sa.Column("preference", sa.Double(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("choice IN ('A','B','tie','both_bad')", name=op.f("ck_adjudications_choice")),
        sa.CheckConstraint("preference IS NULL OR (preference >= -1 AND preference <= 1)",
                           name=op.f("ck_adjudications_pref_range")),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparisons.id"],
                                name=op.f("fk_adjudications_comparison_id_comparisons")),
        sa.ForeignKeyConstraint(["reviewer_id"], ["users.id"], name=op.f("fk_adjudications_reviewer_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjudications")),
        sa.UniqueConstraint("comparison_id", name=op.f("uq_adjudications_comparison_id")),
    )


def downgrade() -> None:
    op.drop_table("adjudications")
