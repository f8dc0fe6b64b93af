"""Database tables. Their shape is owned by the Alembic migrations in gpustack/server/migrations."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back timezone-aware, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name in ("sqlite", "mysql") else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Every table sets sqlite_autoincrement: ids are never reused, so a new row cannot inherit an old
    one's logs, late reports or references (PostgreSQL and MySQL never reuse them anyway)."""


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


class UserRow(Timestamped, Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    full_name: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    hashed_password: Mapped[str] = mapped_column(String(255), nullable=False)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    require_password_change: Mapped[bool] = mapped_column(Boolean, default=False, nullable=False)
    # Gateway limits per minute over all of the user's keys and sessions; NULL: none.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class ApiKeyRow(Timestamped, Base):
    __tablename__ = "api_keys"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    access_key: Mapped[str] = mapped_column(String(32), unique=True, nullable=False)
    hashed_secret_key: Mapped[str] = mapped_column(String(128), nullable=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # Gateway limits per minute of this key, and the model names it may use; NULL: none, any.
    rpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tpm_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class UsageRow(Base):
    """Gateway usage per hour, user, API key (0: a browser session) and model name, added to in batches.

    No foreign keys: what was used stays on record after the user, key or model is deleted."""

    __tablename__ = "model_usage"
    __table_args__ = (
        UniqueConstraint("hour", "user_id", "api_key_id", "model_name", name="uq_model_usage_bucket"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    user_id: Mapped[int] = mapped_column(Integer, index=True, nullable=False)
    api_key_id: Mapped[int] = mapped_column(Integer, nullable=False)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    requests: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    failed_requests: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)


class UserSessionRow(Base):
    """A browser login. Only a hash of its token is kept; deleting the row ends the session (logout,
    password change), and deleting the user deletes its sessions."""

    __tablename__ = "user_sessions"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True, nullable=False
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True, nullable=False)


class WorkerRow(Timestamped, Base):
    __tablename__ = "workers"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    uuid: Mapped[str] = mapped_column(String(64), nullable=False)
    hostname: Mapped[str] = mapped_column(String(255), default="", nullable=False)
    ip: Mapped[str] = mapped_column(String(64), nullable=False)
    port: Mapped[int] = mapped_column(Integer, nullable=False)
    # Effective labels (what selectors match): the worker's own, overridden by the administrator's.
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, nullable=False)
    reported_labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, nullable=False)
    user_labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, nullable=False)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    state_message: Mapped[str] = mapped_column(Text, default="", nullable=False)
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, nullable=False)
    system_reserved: Mapped[dict[str, int]] = mapped_column(JSON, default=dict, nullable=False)
    heartbeat_interval: Mapped[float] = mapped_column(Float, default=5.0, nullable=False)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class ModelRow(Timestamped, Base):
    __tablename__ = "models"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    description: Mapped[str] = mapped_column(Text, default="", nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    local_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the other sources' fields (migration 0006)
    huggingface_repo_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    huggingface_filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_scope_model_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_scope_file_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ollama_library_model_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    backend: Mapped[str] = mapped_column(String(32), nullable=False)
    backend_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    backend_parameters: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    env: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, nullable=False)
    replicas: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    ready_replicas: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    placement_strategy: Mapped[str] = mapped_column(String(16), nullable=False)
    worker_selector: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, nullable=False)
    gpu_selector: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cpu_offloading: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    distributed_inference_across_workers: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    restart_on_error: Mapped[bool] = mapped_column(Boolean, default=True, nullable=False)
    # backend custom (migration 0005): the command template and what the user states about it
    run_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    health_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    routes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    resources: Mapped[dict[str, int] | None] = mapped_column(JSON, nullable=True)


class ModelInstanceRow(Timestamped, Base):
    __tablename__ = "model_instances"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), index=True, nullable=False
    )
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"), index=True, nullable=True
    )
    worker_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    port: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    state: Mapped[str] = mapped_column(String(32), index=True, nullable=False)
    state_message: Mapped[str] = mapped_column(Text, default="", nullable=False)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    restart_count: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    last_restart_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    computed_resource_claim: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    gpu_indexes: Mapped[list[int]] = mapped_column(JSON, default=list, nullable=False)
    # Other workers serving part of this instance, each with its claim (counted like the main one's).
    subordinate_workers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, nullable=False)
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    resolved_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Optimistic locking: a write based on a stale read fails instead of silently undoing a newer one.
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)

    __mapper_args__ = {"version_id_col": version}


class ModelFileRow(Timestamped, Base):
    """One copy of a model's files on one worker (migration 0006): kept when its models are deleted."""

    __tablename__ = "model_files"
    __table_args__ = (
        UniqueConstraint("worker_id", "cache_key", name="uq_model_files_worker_key"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[int] = mapped_column(
        ForeignKey("workers.id", ondelete="CASCADE"), index=True, nullable=False
    )
    worker_name: Mapped[str] = mapped_column(String(255), nullable=False)
    cache_key: Mapped[str] = mapped_column(String(512), nullable=False)
    source: Mapped[str] = mapped_column(String(32), nullable=False)
    local_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    huggingface_repo_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    huggingface_filename: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_scope_model_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    model_scope_file_path: Mapped[str | None] = mapped_column(String(255), nullable=True)
    ollama_library_model_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    state_message: Mapped[str] = mapped_column(Text, default="", nullable=False)
    size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    downloaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)
    download_speed: Mapped[int] = mapped_column(BigInteger, default=0, nullable=False)  # bytes per second
    download_progress: Mapped[float] = mapped_column(Float, default=0.0, nullable=False)  # percent
    resolved_paths: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)
    model_names: Mapped[list[str]] = mapped_column(JSON, default=list, nullable=False)


class ClusterSecretRow(Base):
    """A secret every server of a cluster must share (migration 0007): the cluster token that workers
    join with, and the session secret their credentials derive from. Generated once, by the first server."""

    __tablename__ = "cluster_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class LeaderLeaseRow(Base):
    """Which server runs the scheduler and controllers (migration 0007): the holder renews the lease; once
    it has expired, another server may take it, with the next term. See server/leader_lease.py."""

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), nullable=False)  # the holding process's random id
    term: Mapped[int] = mapped_column(Integer, nullable=False)
    # Who holds it, in words for people, and to recognise this server's own earlier process.
    holder_host: Mapped[str] = mapped_column(String(255), nullable=False)
    holder_data_dir: Mapped[str] = mapped_column(Text, nullable=False)
    holder_address: Mapped[str] = mapped_column(String(255), nullable=False)
    holder_pid: Mapped[int] = mapped_column(Integer, nullable=False)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    renewed_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
