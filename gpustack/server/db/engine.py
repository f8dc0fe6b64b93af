"""Connecting to the database the user configured: SQLite (WAL) by default, PostgreSQL or MySQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from gpustack.server import storage_full

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "mysql": "mysql+aiomysql",
}


def async_url(database_url: str) -> str:
    """The URL a user writes (postgresql://...) turned into the asyncio driver SQLAlchemy needs."""
    url = make_url(database_url)
    backend = url.drivername.split("+", 1)[0]
    if backend not in _ASYNC_DRIVERS:
        raise ValueError(f"unsupported database {url.drivername!r}: use sqlite, postgresql or mysql")
    return url.set(drivername=_ASYNC_DRIVERS[backend]).render_as_string(hide_password=False)


def sqlite_file(database_url: str) -> Path | None:
    """The file of a SQLite database URL; None for an in-memory one or another kind of database."""
    url = make_url(database_url)
    if url.drivername.split("+", 1)[0] != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database).absolute()


def create_engine(database_url: str) -> AsyncEngine:
    url = async_url(database_url)
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        storage_full.install(engine)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL: readers never block the writer and a crash mid-write loses nothing committed.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    engine = create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
    storage_full.install(engine)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)
