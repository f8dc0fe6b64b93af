"""The PostgreSQL event bus: what one server commits reaches the subscribers of every server, whole,
once, and only if it commits; a subscriber that may have missed something is told to resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gpustack.server.bus import Event, EventType, Subscription
from gpustack.server.bus_postgres import PAYLOAD_LIMIT, PostgresEventBus, decode, encode
from gpustack.server.db import events
from gpustack.server.db.engine import create_engine, session_factory
from gpustack.server.db.migrate import upgrade_to_head
from gpustack.server.db.tables import ModelRow, WorkerRow

pytestmark = pytest.mark.postgres


@dataclass
class Node:
    """What one server has of the bus: its engine, its bus, and sessions that publish on it."""

    engine: AsyncEngine
    bus: PostgresEventBus
    sessions: async_sessionmaker[AsyncSession]


@pytest.fixture
async def nodes(postgres_url: str) -> AsyncIterator[tuple[Node, Node]]:
    events.install()
    made: list[Node] = []
    for origin in ("server-a", "server-b"):
        engine = create_engine(postgres_url)
        if not made:
            await upgrade_to_head(engine)
        bus = PostgresEventBus(origin)
        await bus.start(engine)
        sessions = session_factory(engine)
        sessions.configure(info={"bus": bus})
        made.append(Node(engine, bus, sessions))
    try:
        yield made[0], made[1]
    finally:
        for node in made:
            await node.bus.close()
            await node.engine.dispose()


def model(name: str) -> ModelRow:
    return ModelRow(
        name=name, source="local_path", local_path="/m.gguf", backend="llama-box", placement_strategy="spread"
    )


async def next_event(subscription: Subscription) -> Event:
    event = await subscription.get(timeout=10)
    assert event is not None, "no event within 10 s"
    return event


async def test_a_change_committed_through_one_server_reaches_every_servers_subscribers_once(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    async with a.bus.subscribe("models") as on_a, b.bus.subscribe("models") as on_b:
        async with a.sessions() as session:
            session.add(model("m1"))
            await session.commit()
        here, there = await next_event(on_a), await next_event(on_b)
        assert here.type is there.type is EventType.CREATED
        assert there.data == here.data and there.data["name"] == "m1"
        # The server that committed hears its own notification too, and skips it: no second event.
        async with a.sessions() as session:
            row = (await session.execute(select(ModelRow))).scalar_one()
            row.description = "changed"
            await session.commit()
        assert (await next_event(on_a)).data["description"] == "changed"
        assert (await next_event(on_b)).data["description"] == "changed"
        assert await on_a.get(timeout=0.5) is None


async def test_a_rolled_back_change_reaches_no_server(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    async with b.bus.subscribe("models") as on_b:
        async with a.sessions() as session:
            session.add(model("never"))
            await session.flush()  # sent with the transaction...
            await session.rollback()  # ...and gone with it
        async with a.sessions() as session:
            session.add(model("kept"))
            await session.commit()
        assert (await next_event(on_b)).data["name"] == "kept"


async def test_a_row_larger_than_a_notification_still_arrives_whole(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    labels = {f"label-{i}": "x" * 100 for i in range(200)}  # about 22 kB, NOTIFY carries under 8000 bytes
    async with b.bus.subscribe("workers") as on_b:
        async with a.sessions() as session:
            session.add(
                WorkerRow(name="big", uuid="u", ip="10.0.0.1", port=10150, state="ready", labels=labels)
            )
            await session.commit()
        arrived = await next_event(on_b)
        assert arrived.type is EventType.CREATED and arrived.data["labels"] == labels


async def test_a_deleted_row_arrives_with_what_it_said(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    async with b.bus.subscribe("models") as on_b:
        async with a.sessions() as session:
            session.add(model("gone"))
            await session.commit()
        assert (await next_event(on_b)).type is EventType.CREATED
        async with a.sessions() as session:
            await session.delete((await session.execute(select(ModelRow))).scalar_one())
            await session.commit()
        arrived = await next_event(on_b)
        assert arrived.type is EventType.DELETED and arrived.data["name"] == "gone"


async def test_subscribers_resync_when_the_listening_connection_is_lost_and_hear_changes_again(
    nodes: tuple[Node, Node],
) -> None:
    a, b = nodes
    async with b.bus.subscribe("models") as on_b:
        async with b.engine.connect() as connection:
            # What a PostgreSQL restart or a dead network does to server b's LISTEN connection.
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid()"
                )
            )
        with pytest.raises(OverflowError):
            await on_b.get(timeout=30)
    async with b.bus.subscribe("models") as on_b:
        async with a.sessions() as session:
            session.add(model("after"))
            await session.commit()
        assert (await next_event(on_b)).data["name"] == "after"


def test_many_changes_of_one_transaction_are_split_under_the_payload_limit_in_order() -> None:
    changes = [Event("model_instances", EventType.UPDATED, {"id": i}) for i in range(2000)]
    changes.append(Event("workers", EventType.DELETED, {"id": 7, "name": "w", "status": {"x": "y" * 5000}}))
    payloads = encode("origin", changes)
    assert len(payloads) > 1 and all(len(p.encode()) < PAYLOAD_LIMIT for p in payloads)
    entries = [entry for payload in payloads for entry in decode(payload)[1]]
    assert [entry[2] for entry in entries] == [*range(2000), 7]
    # The deleted row's long field is left out; its id and name travel.
    assert entries[-1] == ("workers", EventType.DELETED, 7, {"id": 7, "name": "w"})


def test_a_notification_this_version_cannot_read_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match="unreadable event notification"):
        decode('{"o": "x", "e": [["models", "?", 1, null]]}')


async def test_a_burst_of_changes_arrives_in_commit_order(nodes: tuple[Node, Node]) -> None:
    a, b = nodes
    async with b.bus.subscribe("models") as on_b:
        for i in range(50):
            async with a.sessions() as session:
                session.add(model(f"m{i}"))
                await session.commit()
        names = [(await next_event(on_b)).data["name"] for _ in range(50)]
    assert names == [f"m{i}" for i in range(50)]
    await asyncio.sleep(0)
