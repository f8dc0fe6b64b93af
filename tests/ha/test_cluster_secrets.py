"""The cluster's secrets live in the database: the first server brings its data dir's (so that its
workers keep working), every later one takes them from there, and a server given another cluster's token
does not start on a shared database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gpustack.server.cluster_setup import load_secrets
from gpustack.server.db.engine import create_engine, session_factory
from gpustack.server.db.migrate import upgrade_to_head
from gpustack.server.start_refused import StartRefused
from tests.ha.conftest import own_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    if request.param == "sqlite":
        async for engine in _migrated(f"sqlite:///{tmp_path / 'database.db'}"):
            yield engine
        return
    async with own_postgres_database() as url:
        async for engine in _migrated(url):
            yield engine


async def _migrated(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(url)
    await upgrade_to_head(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def shared(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "postgresql"


async def test_the_first_server_brings_its_secrets_and_the_next_one_gets_them(
    engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # What a single server of an earlier release left in its data dir: its workers hold credentials
    # derived from that session secret, and were given that token.
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    (first / "token").write_text("old-token\n")
    (first / "session_secret").write_text("old-secret\n")
    found = await load_secrets(session_factory(engine), first, None, shared(engine))
    assert (found.cluster_token, found.session_secret) == ("old-token", "old-secret")
    # A second server whose data dir had secrets of its own (it ran alone before) takes the cluster's.
    second.mkdir()
    (second / "token").write_text("its-own\n")
    again = await load_secrets(session_factory(engine), second, None, shared(engine))
    assert again == found
    assert (second / "token").read_text().strip() == "old-token"
    assert (second / "session_secret").read_text().strip() == "old-secret"
    assert (second / "token").stat().st_mode & 0o077 == 0
    assert "held another cluster token than the cluster's" in caplog.text


async def test_secrets_are_generated_once_when_nobody_had_any(engine: AsyncEngine, tmp_path: Path) -> None:
    found = await load_secrets(session_factory(engine), tmp_path / "a", None, shared(engine))
    assert len(found.cluster_token) == 32 and len(found.session_secret) == 32
    assert await load_secrets(session_factory(engine), tmp_path / "b", None, shared(engine)) == found


async def test_a_token_other_than_the_stored_one_is_refused_where_servers_share_the_database(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await load_secrets(session_factory(engine), tmp_path / "a", "the-token", shared(engine))
    if shared(engine):
        with pytest.raises(StartRefused, match="the cluster token stored in the database is another one"):
            await load_secrets(session_factory(engine), tmp_path / "b", "another-token", True)
        found = await load_secrets(session_factory(engine), tmp_path / "b", "the-token", True)
        assert found.cluster_token == "the-token"
    else:
        # One server only: the command line wins, as it always did.
        found = await load_secrets(session_factory(engine), tmp_path / "a", "another-token", False)
        assert found.cluster_token == "another-token"
        assert (tmp_path / "a" / "token").read_text().strip() == "another-token"
