"""jobs.name and images.name: the name an upload came with (its file's name, or `name`), shown by the gallery.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("name", sa.String(length=200), nullable=True))
    op.add_column("images", sa.Column("name", sa.String(length=200), nullable=True))


def downgrade() -> None:
    for table in ("images", "jobs"):
        with op.batch_alter_table(table) as batch:  # SQLite drops a column by copying the table
            batch.drop_column("name")
