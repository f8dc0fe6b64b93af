"""distributed placement: subordinate workers and placement detail of model instances

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_instances") as batch:
        batch.add_column(sa.Column("subordinate_workers", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("placement", sa.JSON(), nullable=True))
    # Existing instances are single-worker placements: an empty list is their true value. (A column
    # default would do this on SQLite and PostgreSQL but not on MySQL, whose JSON columns take none.)
    op.execute("UPDATE model_instances SET subordinate_workers = '[]'")
    with op.batch_alter_table("model_instances") as batch:
        batch.alter_column("subordinate_workers", existing_type=sa.JSON(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("model_instances") as batch:
        batch.drop_column("placement")
        batch.drop_column("subordinate_workers")
