"""never reuse ids on SQLite: rebuild tables that lost AUTOINCREMENT

Migration 0002 rebuilt model_instances through batch mode, which on SQLite recreates the table from
its reflection and drops AUTOINCREMENT. Without it SQLite hands the highest deleted id out again, so a
new instance inherited a deleted one's engine log and could receive its late reports. This rebuilds
the table with the keyword, keeping its rows (so the sequence starts above the highest id still
present). PostgreSQL and MySQL never reuse ids; nothing changes there.

Only model_instances is rebuilt: the other tables still have the keyword from 0001, and rebuilding a
table that others reference would, with foreign keys on, cascade the DROP to their rows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _lacks_autoincrement(connection: sa.engine.Connection, table: str) -> bool:
    sql = connection.execute(
        sa.text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"), {"name": table}
    ).scalar()
    return sql is not None and "AUTOINCREMENT" not in sql.upper()


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    if _lacks_autoincrement(connection, "model_instances"):
        with op.batch_alter_table(
            "model_instances", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass


def downgrade() -> None:
    pass  # AUTOINCREMENT is what every release wanted; there is nothing to undo.
