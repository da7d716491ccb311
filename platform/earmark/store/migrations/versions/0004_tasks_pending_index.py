"""tasks: partial index that serves the claim query in slot order over unfinished tasks only

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 16:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The claim walks a campaign's unfinished slots in (slot, id) order and stops at the first one it
    # can lock; done tasks (most of a mature campaign) stay out of the index.
    op.create_index("ix_tasks_pending", "tasks", ["campaign_id", "slot", "id"], unique=False,
                    postgresql_where=sa.text("status <> 'done'"))


def downgrade() -> None:
    op.drop_index("ix_tasks_pending", table_name="tasks", postgresql_where=sa.text("status <> 'done'"))
