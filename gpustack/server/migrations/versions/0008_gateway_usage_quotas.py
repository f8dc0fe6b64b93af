"""gateway usage and quotas: hourly usage per user, API key and model; per-minute limits of keys and
users; the models a key may use

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_usage",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(length=255), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("failed_requests", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("hour", "user_id", "api_key_id", "model_name", name="uq_model_usage_bucket"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_model_usage_user_id", "model_usage", ["user_id"])
    # Nullable: existing keys and users keep no limits and may use every model.
    for table in ("users", "api_keys"):
        op.add_column(table, sa.Column("rpm_limit", sa.Integer(), nullable=True))
        op.add_column(table, sa.Column("tpm_limit", sa.Integer(), nullable=True))
    op.add_column("api_keys", sa.Column("allowed_models", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("allowed_models")
        batch.drop_column("tpm_limit")
        batch.drop_column("rpm_limit")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tpm_limit")
        batch.drop_column("rpm_limit")
    op.drop_index("ix_model_usage_user_id", "model_usage")
    op.drop_table("model_usage")
