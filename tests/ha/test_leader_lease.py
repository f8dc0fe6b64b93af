"""The leader lease: one holder at a time, taken over once it expires or is released, and a fence that
stops an old leader's controllers from writing after a takeover, even mid-flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gpustack.server.db.engine import create_engine, session_factory
from gpustack.server.db.migrate import upgrade_to_head
from gpustack.server.db.tables import UserRow
from gpustack.server.leader_lease import Candidate, Holder, Lease, NotLeader, fenced

pytestmark = pytest.mark.postgres

TTL = 1.0


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(postgres_url)
    await upgrade_to_head(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def lease(engine: AsyncEngine, name: str, data_dir: str | None = None, ttl: float = TTL) -> Lease:
    me = Candidate(name, "host", data_dir or f"/var/lib/{name}", f"{name}:80", 1)
    return Lease(session_factory(engine), me, ttl=ttl)


async def until_acquired(candidate: Lease) -> int:
    for _ in range(200):
        won = await candidate.acquire()
        if isinstance(won, int):
            return won
        await asyncio.sleep(0.1)
    raise AssertionError("the lease was never taken over")


async def test_one_server_holds_the_lease_and_another_takes_it_only_once_it_expired(
    engine: AsyncEngine,
) -> None:
    a, b = lease(engine, "a"), lease(engine, "b")
    first = await a.acquire()
    assert first == 1
    held = await b.acquire()
    assert isinstance(held, Holder) and held.id == "a" and "a:80" in held.describe()
    assert await a.renew(1)
    # a stops renewing (killed): once the lease expires, b takes it with the next term.
    assert await until_acquired(b) == 2
    assert not await a.renew(1)
    assert isinstance(await a.acquire(), Holder)


async def test_a_released_lease_is_taken_at_once(engine: AsyncEngine) -> None:
    a, b = lease(engine, "a", ttl=3600), lease(engine, "b", ttl=3600)
    assert await a.acquire() == 1
    await a.release(1)
    assert await b.acquire() == 2


async def test_a_restarted_server_takes_its_own_lease_back_at_once(engine: AsyncEngine) -> None:
    before = lease(engine, "process-1", data_dir="/var/lib/gpustack", ttl=3600)
    assert await before.acquire() == 1
    # The same data dir on the same host: its lock says the earlier process is gone.
    after = lease(engine, "process-2", data_dir="/var/lib/gpustack", ttl=3600)
    assert await after.acquire() == 2
    assert not await before.renew(1)


async def test_the_old_leaders_controllers_cannot_write_after_a_takeover(engine: AsyncEngine) -> None:
    a, b = lease(engine, "a"), lease(engine, "b")
    assert await a.acquire() == 1
    sessions = fenced(session_factory(engine), "a", 1)
    async with sessions() as session:
        session.add(UserRow(username="while-leading", hashed_password="x"))
        await session.commit()
    await until_acquired(b)
    with pytest.raises(NotLeader):
        async with sessions() as session:
            session.add(UserRow(username="after-losing", hashed_password="x"))
            await session.commit()
    async with session_factory(engine)() as session:
        names = (await session.execute(select(UserRow.username))).scalars().all()
    assert names == ["while-leading"]


async def test_a_takeover_waits_for_the_old_leaders_transaction_in_flight(engine: AsyncEngine) -> None:
    a, b = lease(engine, "a", ttl=0.2), lease(engine, "b")
    assert await a.acquire() == 1
    async with fenced(session_factory(engine), "a", 1)() as slow:
        slow.add(UserRow(username="in-flight", hashed_password="x"))
        await slow.flush()  # the fence holds the lease row until this transaction ends
        await asyncio.sleep(0.5)  # a's lease has expired meanwhile (a paused, or a long transaction)
        takeover = asyncio.create_task(b.acquire())
        await _until_waiting_for_a_lock(engine)
        assert not takeover.done()
        await slow.commit()
    assert await takeover == 2


async def test_the_leader_renews_while_its_own_controllers_hold_the_fence(engine: AsyncEngine) -> None:
    a = lease(engine, "a")
    assert await a.acquire() == 1
    async with fenced(session_factory(engine), "a", 1)() as busy:
        await busy.execute(select(UserRow))  # begins: the fence holds the lease row
        assert await asyncio.wait_for(a.renew(1), 30)
        await busy.commit()


async def _until_waiting_for_a_lock(engine: AsyncEngine) -> None:
    for _ in range(300):
        async with engine.connect() as connection:
            waiting = (
                await connection.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
            ).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the takeover never waited for the lease row")
