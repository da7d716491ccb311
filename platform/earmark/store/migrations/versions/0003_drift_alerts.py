"""drift_alerts: thresholds crossed by drift reports (PSI, KS, mean shift, hacking, trap)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 12:00:00
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "drift_alerts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("report_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.String(length=200), nullable=False),
        sa.Column("baseline_version", sa.Integer(), nullable=True),
        sa.Column("candidate_version", sa.Integer(), nullable=True),
        sa.Column("reward_model_id", sa.BigInteger(), nullable=True),
        sa.Column("dimension", sa.String(length=64), nullable=True),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind IN ('psi', 'ks', 'mean_shift', 'hacking_duration', 'hacking_length', 'judge_agreement', 'trap')",
            name=op.f("ck_drift_alerts_kind")),
        sa.CheckConstraint("severity IN ('warning','alert')", name=op.f("ck_drift_alerts_severity")),
        sa.CheckConstraint("value = value AND threshold = threshold", name=op.f("ck_drift_alerts_not_nan")),
        sa.ForeignKeyConstraint(["reward_model_id"], ["reward_models.id"],
                                name=op.f("fk_drift_alerts_reward_model_id_reward_models")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], name=op.f("fk_drift_alerts_created_by_users")),
        sa.ForeignKeyConstraint(["acknowledged_by"], ["users.id"], name=op.f("fk_drift_alerts_acknowledged_by_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_drift_alerts")),
    )
    op.create_index("ix_drift_alerts_policy_created", "drift_alerts", ["policy", "created_at"], unique=False)
    op.create_index("ix_drift_alerts_report_id", "drift_alerts", ["report_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_drift_alerts_report_id", table_name="drift_alerts")
    op.drop_index("ix_drift_alerts_policy_created", table_name="drift_alerts")
    op.drop_table("drift_alerts")
