"""jobs.finished_at indexed: /metrics adds up the jobs finished since its last scrape (service/api/metrics.py)
instead of reading every job ever run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # if_not_exists: a database upgraded by the hand-made schema in between already has it.
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"], unique=False, if_not_exists=True)


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
