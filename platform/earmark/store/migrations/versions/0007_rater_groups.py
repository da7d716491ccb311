"""annotation app: rater groups and campaign assignment, task skips, login throttles, app secrets

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 04:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rater_groups",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rater_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_rater_groups_name")),
    )
    op.create_table(
        "rater_group_members",
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["group_id"], ["rater_groups.id"], name=op.f("fk_rater_group_members_group_id_rater_groups"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_rater_group_members_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_rater_group_members")),
    )
    op.create_index(op.f("ix_rater_group_members_user_id"), "rater_group_members", ["user_id"], unique=False)
    op.create_table(
        "campaign_groups",
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("group_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_groups_campaign_id_campaigns"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["group_id"], ["rater_groups.id"], name=op.f("fk_campaign_groups_group_id_rater_groups"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("campaign_id", "group_id", name=op.f("pk_campaign_groups")),
    )
    op.create_table(
        "task_skips",
        sa.Column("rater_id", sa.BigInteger(), nullable=False),
        sa.Column("comparison_id", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["rater_id"], ["users.id"], name=op.f("fk_task_skips_rater_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["comparison_id"], ["comparisons.id"], name=op.f("fk_task_skips_comparison_id_comparisons"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rater_id", "comparison_id", name=op.f("pk_task_skips")),
    )
    op.create_table(
        "login_throttles",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_throttles")),
    )
    op.create_table(
        "app_secrets",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_app_secrets")),
    )
    op.create_index("ix_tasks_pending_depth", "tasks", ["campaign_id", "comparison_id", "slot", "id"], unique=False,
                    postgresql_where=sa.text("status <> 'done'"))


def downgrade() -> None:
    op.drop_index("ix_tasks_pending_depth", table_name="tasks", postgresql_where=sa.text("status <> 'done'"))
    op.drop_table("app_secrets")
    op.drop_table("login_throttles")
    op.drop_table("task_skips")
    op.drop_table("campaign_groups")
    op.drop_index(op.f("ix_rater_group_members_user_id"), table_name="rater_group_members")
    op.drop_table("rater_group_members")
    op.drop_table("rater_groups")
