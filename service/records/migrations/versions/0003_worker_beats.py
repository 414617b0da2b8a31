"""worker_beats: each worker main process's last sign of life (issue 24's worker supervision,
service/records/workers.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # if_not_exists: the hand-made schema may have made it on a database from before migrations.
    op.create_table("worker_beats",
                    sa.Column("name", sa.String(length=200), nullable=False),
                    sa.Column("beat_at", sa.Float(), nullable=False),
                    sa.PrimaryKeyConstraint("name"), if_not_exists=True)


def downgrade() -> None:
    op.drop_table("worker_beats")
