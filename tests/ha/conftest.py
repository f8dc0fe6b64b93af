"""Several servers on one PostgreSQL: each test gets a database of its own, created and dropped around it,
so that concurrent test runs on the shared test server never reset each other's."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import require_or_skip


@asynccontextmanager
async def own_postgres_database() -> AsyncIterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards."""
    import asyncpg

    base = os.environ.get("GPUSTACK_TEST_POSTGRES_URL", "")
    require_or_skip(bool(base), "a PostgreSQL server (GPUSTACK_TEST_POSTGRES_URL, from scripts/postgres.sh)")
    name = f"gpustack_ha_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_url(base).set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            await _drop(admin, name)
        finally:
            await admin.close()


async def _drop(admin: Any, name: str) -> None:
    """DROP ... WITH (FORCE): a server killed by the test may have left connections behind. FORCE may not
    end another role's backend, and PostgreSQL's autovacuum (a superuser's) can be working in a fresh
    database for a moment: then again, shortly."""
    import asyncpg

    for attempt in range(40):
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == 39:
                raise
            await asyncio.sleep(0.25)


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async with own_postgres_database() as url:
        yield url
