"""A busy database is waited out: units of work run again when another connection holds the lock."""

from __future__ import annotations

import asyncio
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gpustack.server.db.engine import create_engine, session_factory
from gpustack.server.db.retry import DatabaseBusy, is_busy, run_transaction
from tests.conftest import require_or_skip

# Short, so that the lock outlasts SQLite's own wait inside a statement and the retry has to act.
BUSY_TIMEOUT_MS = 50


def shorten_busy_timeout(engine: AsyncEngine, milliseconds: int = BUSY_TIMEOUT_MS) -> None:
    """New connections of `engine` wait only `milliseconds` for a lock (after the engine's own pragmas)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _short(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={milliseconds}")
        cursor.close()


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> AsyncIterator[tuple[Path, AsyncEngine]]:
    path = tmp_path / "busy.db"
    engine = create_engine(f"sqlite:///{path}")
    shorten_busy_timeout(engine)
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER)"))
        await connection.execute(text("INSERT INTO counter VALUES (1, 0)"))
    yield path, engine
    await engine.dispose()


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A second connection that takes the database's write lock and keeps it until rolled back."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("UPDATE counter SET value = value + 100 WHERE id = 1")
    return holder


async def increment(session: AsyncSession) -> int:
    await session.execute(text("UPDATE counter SET value = value + 1 WHERE id = 1"))
    return int((await session.execute(text("SELECT value FROM counter WHERE id = 1"))).scalar_one())


async def test_a_write_runs_again_once_a_lock_held_past_the_busy_timeout_is_released(
    sqlite_file: tuple[Path, AsyncEngine],
) -> None:
    path, engine = sqlite_file
    sessions = session_factory(engine)
    holder = hold_write_lock(path)
    # Without a retry the same write fails: this is the "database is locked" 500 of an overloaded server.
    with pytest.raises(OperationalError, match="database is locked") as failure:
        async with sessions() as session:
            await increment(session)
            await session.commit()
    assert is_busy(failure.value)
    asyncio.get_running_loop().call_later(0.3, holder.rollback)
    try:
        value = await run_transaction(sessions, increment, what="incrementing")
    finally:
        holder.close()
    assert value == 1  # the held transaction was rolled back; ours ran once, in full


async def test_a_lock_that_never_ends_gives_a_503_with_words(sqlite_file: tuple[Path, AsyncEngine]) -> None:
    path, engine = sqlite_file
    holder = hold_write_lock(path)
    try:
        with pytest.raises(DatabaseBusy) as busy:
            await run_transaction(session_factory(engine), increment, what="incrementing", attempts=3)
    finally:
        holder.close()
    assert busy.value.status_code == 503
    assert "the database is busy (database is locked), so incrementing did not happen" in busy.value.message


async def test_other_database_errors_are_not_retried(sqlite_file: tuple[Path, AsyncEngine]) -> None:
    _, engine = sqlite_file
    calls = 0

    async def broken(session: AsyncSession) -> None:
        nonlocal calls
        calls += 1
        await session.execute(text("SELECT * FROM no_such_table"))

    with pytest.raises(OperationalError, match="no such table"):
        await run_transaction(session_factory(engine), broken, what="reading")
    assert calls == 1


def postgres_url() -> str:
    url = os.environ.get("GPUSTACK_TEST_POSTGRES_URL", "")
    require_or_skip(bool(url), "a PostgreSQL server (GPUSTACK_TEST_POSTGRES_URL, from scripts/postgres.sh)")
    return url


@pytest.fixture
async def postgres_pair() -> AsyncIterator[tuple[Any, AsyncEngine, str]]:
    """An asyncpg connection to hold locks, gpustack's engine, and a table of two rows (its name)."""
    import asyncpg

    url = postgres_url()
    engine = create_engine(url)
    holder = await asyncpg.connect(url)
    # A schema of its own: other tests reset the public schema of the same database at any time.
    schema = f"retry_{secrets.token_hex(4)}"
    await holder.execute(
        f"CREATE SCHEMA {schema}; SET search_path TO {schema};"
        "CREATE TABLE pair (id INT PRIMARY KEY, v INT); INSERT INTO pair VALUES (1, 0), (2, 0);"
    )

    try:
        yield holder, engine, f"{schema}.pair"
    finally:
        if holder.is_in_transaction():
            await holder.execute("ROLLBACK")
        await holder.execute(f"DROP SCHEMA {schema} CASCADE")
        await holder.close()
        await engine.dispose()


@pytest.mark.postgres
async def test_a_postgresql_deadlock_victim_runs_again(postgres_pair: tuple[Any, AsyncEngine, str]) -> None:
    holder, engine, pair = postgres_pair
    await holder.execute("BEGIN")
    await holder.execute(f"UPDATE {pair} SET v = v + 10 WHERE id = 1")
    attempts = 0
    holds_row_2 = asyncio.Event()

    async def cross(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        await session.execute(text(f"UPDATE {pair} SET v = v + 1 WHERE id = 2"))
        holds_row_2.set()
        await session.execute(text(f"UPDATE {pair} SET v = v + 1 WHERE id = 1"))

    task = asyncio.create_task(run_transaction(session_factory(engine), cross, what="crossing"))
    await holds_row_2.wait()
    # Ours waits for row 1 half a second before the holder waits for row 2, so ours reaches
    # deadlock_timeout (1 s) first and is the transaction PostgreSQL aborts.
    await asyncio.sleep(0.5)
    await holder.execute(f"UPDATE {pair} SET v = v + 10 WHERE id = 2")
    await holder.execute("COMMIT")
    await asyncio.wait_for(task, 30)
    assert attempts == 2
    assert dict(await holder.fetch(f"SELECT id, v FROM {pair}")) == {1: 11, 2: 11}


@pytest.mark.postgres
async def test_a_postgresql_serialization_failure_runs_again(
    postgres_pair: tuple[Any, AsyncEngine, str],
) -> None:
    holder, engine, pair = postgres_pair
    attempts = 0

    async def read_then_write(session: AsyncSession) -> None:
        nonlocal attempts
        attempts += 1
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        await session.execute(text(f"SELECT v FROM {pair} WHERE id = 1"))  # the snapshot starts here
        if attempts == 1:
            await holder.execute(f"UPDATE {pair} SET v = v + 10 WHERE id = 1")  # committed after our snapshot
        await session.execute(text(f"UPDATE {pair} SET v = v + 1 WHERE id = 1"))

    await run_transaction(session_factory(engine), read_then_write, what="updating")
    assert attempts == 2
    assert await holder.fetchval(f"SELECT v FROM {pair} WHERE id = 1") == 11


async def test_retries_stop_once_the_window_has_passed(
    sqlite_file: tuple[Path, AsyncEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """However many attempts are allowed, a request does not wait minutes for a lock that stays held."""
    path, engine = sqlite_file
    monkeypatch.setattr("gpustack.server.db.retry.WINDOW_SECONDS", 0.5)
    calls = 0

    async def counted(session: AsyncSession) -> int:
        nonlocal calls
        calls += 1
        return await increment(session)

    holder = hold_write_lock(path)
    try:
        with pytest.raises(DatabaseBusy):
            await run_transaction(session_factory(engine), counted, what="incrementing", attempts=1000)
    finally:
        holder.close()
    assert 1 < calls < 1000
