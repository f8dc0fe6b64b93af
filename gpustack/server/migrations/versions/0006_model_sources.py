"""model sources: the Hugging Face, ModelScope and Ollama library fields of a model, and model files

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SOURCE_FIELDS = (
    "huggingface_repo_id",
    "huggingface_filename",
    "model_scope_model_id",
    "model_scope_file_path",
    "ollama_library_model_name",
)


def upgrade() -> None:
    # Nullable: every existing model is a local path and keeps its row as it is.
    for name in _SOURCE_FIELDS:
        op.add_column("models", sa.Column(name, sa.String(length=255), nullable=True))
    op.create_table(
        "model_files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "worker_id", sa.Integer(), sa.ForeignKey("workers.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("worker_name", sa.String(length=255), nullable=False),
        sa.Column("cache_key", sa.String(length=512), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("local_path", sa.Text(), nullable=True),
        *(sa.Column(name, sa.String(length=255), nullable=True) for name in _SOURCE_FIELDS),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("state_message", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("downloaded_bytes", sa.BigInteger(), nullable=False),
        sa.Column("download_speed", sa.BigInteger(), nullable=False),
        sa.Column("download_progress", sa.Float(), nullable=False),
        sa.Column("resolved_paths", sa.JSON(), nullable=False),
        sa.Column("model_names", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("worker_id", "cache_key", name="uq_model_files_worker_key"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_files_worker_id", "model_files", ["worker_id"])


def downgrade() -> None:
    op.drop_index("ix_model_files_worker_id", table_name="model_files")
    op.drop_table("model_files")
    with op.batch_alter_table("models") as batch:
        for name in reversed(_SOURCE_FIELDS):
            batch.drop_column(name)
