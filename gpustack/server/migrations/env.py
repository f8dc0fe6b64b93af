"""Alembic environment: migrations run on the connection gpustack hands over (see db/migrate.py)."""

from __future__ import annotations

from alembic import context

from gpustack.server.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "gpustack migrations run through gpustack.server.db.migrate, which passes a connection"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
