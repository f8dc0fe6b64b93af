"""custom backends: the command template, health path, routes and stated resources of a model

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns: every existing model keeps its rows as they are (NULL: not a custom command).
    # Instances keep their placement JSON too; the old {"mode", "engine"} shape is read into the typed
    # layout (schemas/placement.py), so nothing needs rewriting.
    op.add_column("models", sa.Column("run_command", sa.Text(), nullable=True))
    op.add_column("models", sa.Column("health_path", sa.String(length=255), nullable=True))
    op.add_column("models", sa.Column("routes", sa.JSON(), nullable=True))
    op.add_column("models", sa.Column("resources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("resources")
        batch.drop_column("routes")
        batch.drop_column("health_path")
        batch.drop_column("run_command")
