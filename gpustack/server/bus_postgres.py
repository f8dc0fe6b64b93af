"""The event bus of several servers on one PostgreSQL: what one server commits reaches every server.

Sending: each flush's changes go out with NOTIFY inside the same transaction (db/events.py calls
`send_with`), so PostgreSQL delivers them to the other servers only if it commits, and in commit order.
A NOTIFY payload must stay under 8000 bytes, and a worker's row alone can pass that, so a change travels
as its table and row id; a deletion also carries what the row said (cut down to its short fields when it
is long), since the row can no longer be read.

Receiving: one connection per server LISTENs. Arrivals are read back from the database by id, in batches,
and published to this server's subscribers like its own changes. Reading the row as it is now, rather
than as it was, also means that a late arrival can never take a watcher back to an older state. A
server's own notifications come back to it too and are skipped: it published them itself at commit.

A lost LISTEN connection is replaced, and then every subscriber is told to resync (re-list what it
follows), since changes committed meanwhile were not heard.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.util import greenlet_spawn

from gpustack.server.bus import Event, EventBus, EventType
from gpustack.server.db.events import TABLES, read_current

logger = logging.getLogger(__name__)

CHANNEL = "gpustack_events"
# PostgreSQL refuses a payload of 8000 bytes or more.
PAYLOAD_LIMIT = 7900
# A deleted row's description longer than this travels as its short fields only.
DELETED_DATA_LIMIT = 2000
PING_SECONDS = 5.0
# Arrivals waiting to be read back; past this the subscribers resync instead (memory stays bounded).
MAX_BACKLOG = 100_000
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")
_KINDS = {EventType.CREATED: "c", EventType.UPDATED: "u", EventType.DELETED: "d"}
_KIND_OF = {code: kind for kind, code in _KINDS.items()}

Entry = tuple[str, EventType, int, dict[str, Any] | None]


# ---- the payload: {"o": origin, "e": [[topic, kind, id, data or null], ...]} -----------------------------


def _short(data: dict[str, Any]) -> dict[str, Any]:
    """A deleted row's fields that are small: ids, names, states."""
    kept = {
        key: value
        for key, value in data.items()
        if value is None
        or isinstance(value, (bool, int, float))
        or (isinstance(value, str) and len(value) <= 255)
    }
    return kept if len(json.dumps(kept)) <= DELETED_DATA_LIMIT else {"id": data["id"]}


def _entry(event: Event) -> list[Any]:
    data = None
    if event.type is EventType.DELETED:
        data = event.data if len(json.dumps(event.data)) <= DELETED_DATA_LIMIT else _short(event.data)
    return [event.topic, _KINDS[event.type], event.data["id"], data]


def encode(origin: str, events: list[Event]) -> list[str]:
    """Payloads for `events`, each under PAYLOAD_LIMIT bytes, in order."""
    head = json.dumps({"o": origin})[:-1] + ',"e":['
    payloads: list[str] = []
    parts: list[str] = []
    size = len(head) + 2
    for event in events:
        part = json.dumps(_entry(event), separators=(",", ":"))
        if parts and size + len(part) + 1 > PAYLOAD_LIMIT:
            payloads.append(head + ",".join(parts) + "]}")
            parts, size = [], len(head) + 2
        parts.append(part)
        size += len(part) + 1
    if parts:
        payloads.append(head + ",".join(parts) + "]}")
    return payloads


def decode(payload: str) -> tuple[str, list[Entry]]:
    """(origin, entries); raises ValueError for a payload this version cannot read."""
    try:
        message = json.loads(payload)
        origin = str(message["o"])
        entries = [
            (str(topic), _KIND_OF[kind], int(row_id), data) for topic, kind, row_id, data in message["e"]
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"unreadable event notification: {exc}") from None
    return origin, entries


# ---- the bus ------------------------------------------------------------------------------------------


@dataclass
class _Listener:
    proxied: Any  # SQLAlchemy's pooled connection, to invalidate at the end
    connection: Any  # asyncpg's connection under it
    lost: asyncio.Event

    async def close(self) -> None:
        try:
            await greenlet_spawn(self.proxied.invalidate)
        except Exception as exc:  # it is gone either way
            logger.debug("closing the LISTEN connection: %s", exc)


class PostgresEventBus(EventBus):
    def __init__(self, origin: str, max_pending: int = 10_000) -> None:
        super().__init__(max_pending)
        self.origin = origin  # this server process's id: its own notifications are skipped
        self._inbox: asyncio.Queue[str] = asyncio.Queue()
        self._sessions: async_sessionmaker[AsyncSession] | None = None
        self._tasks: list[asyncio.Task] = []
        self._listener: _Listener | None = None
        self._overflowing = False

    def send_with(self, connection: Connection, events: list[Event]) -> None:
        for payload in encode(self.origin, [e for e in events if e.topic in TABLES]):
            connection.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})

    async def start(self, engine: AsyncEngine) -> None:
        """Listen (before anyone subscribes: nothing committed from now on is missed), then keep listening
        and delivering in the background until close()."""
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)  # reads only: no bus
        self._listener = await self._connect(engine)
        self._tasks = [
            asyncio.create_task(self._listen_forever(engine), name="event-bus-listen"),
            asyncio.create_task(self._deliver_forever(), name="event-bus-deliver"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    # ---- listening

    async def _connect(self, engine: AsyncEngine) -> _Listener:
        proxied = await engine.raw_connection()
        connection: Any = proxied.driver_connection
        lost = asyncio.Event()
        try:
            connection.add_termination_listener(lambda _connection: lost.set())
            await connection.add_listener(CHANNEL, self._arrived)
        except BaseException:
            await greenlet_spawn(proxied.invalidate)
            raise
        return _Listener(proxied, connection, lost)

    def _arrived(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._inbox.qsize() >= MAX_BACKLOG:
            if not self._overflowing:
                logger.warning("other servers' changes arrive faster than they are read; subscribers resync")
                self._overflowing = True
            return
        self._inbox.put_nowait(payload)

    async def _listen_forever(self, engine: AsyncEngine) -> None:
        while True:
            assert self._listener is not None
            await self._until_lost(self._listener)
            await self._listener.close()
            self._listener = None
            logger.warning(
                "lost the PostgreSQL connection that receives other servers' changes; reconnecting"
            )
            delay = 0.5
            while self._listener is None:
                try:
                    self._listener = await self._connect(engine)
                except Exception as exc:
                    logger.warning(
                        "cannot listen for other servers' changes yet: %s; retrying in %.0fs", exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 10.0)
            # What was committed while nobody listened was not heard: everyone re-reads what they follow.
            self.resync_all()
            logger.info("receiving other servers' changes again")

    async def _until_lost(self, listener: _Listener) -> None:
        """Return once the connection is closed, or stops answering (a dead network sends no close)."""
        while True:
            try:
                await asyncio.wait_for(listener.lost.wait(), PING_SECONDS)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await asyncio.wait_for(listener.connection.fetchval("SELECT 1"), PING_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("the LISTEN connection does not answer: %s", exc)
                return

    # ---- delivering

    async def _deliver_forever(self) -> None:
        while True:
            payloads = [await self._inbox.get()]
            while not self._inbox.empty() and len(payloads) < 1000:
                payloads.append(self._inbox.get_nowait())
            if self._overflowing:
                self._overflowing = False
                self.resync_all()
            entries: list[Entry] = []
            for payload in payloads:
                try:
                    origin, found = decode(payload)
                except ValueError as exc:
                    logger.warning("%s", exc)
                    continue
                if origin != self.origin:
                    entries.extend(entry for entry in found if entry[0] in TABLES)
            if not entries:
                continue
            try:
                await self._publish_arrivals(entries)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Dropping them silently would leave watchers and the routing table stale: resync instead.
                logger.warning(
                    "cannot read back the rows other servers changed (%s); subscribers resync", exc
                )
                self.resync_all()

    async def _publish_arrivals(self, entries: list[Entry]) -> None:
        wanted: dict[str, set[int]] = {}
        for topic, kind, row_id, _ in entries:
            if kind is not EventType.DELETED:
                wanted.setdefault(topic, set()).add(row_id)
        current: dict[str, dict[int, dict[str, Any]]] = {}
        if wanted:
            assert self._sessions is not None
            async with self._sessions() as session:
                for topic, ids in wanted.items():
                    current[topic] = await read_current(session, topic, ids)
        published: set[tuple[str, int]] = set()
        for topic, kind, row_id, data in entries:
            if kind is EventType.DELETED:
                self.publish(Event(topic, kind, data or {"id": row_id}))
                continue
            if (topic, row_id) in published:
                continue  # one event per row and batch: it already carries the row as it is now
            published.add((topic, row_id))
            row = current[topic].get(row_id)
            if row is not None:  # else deleted since: its own deletion follows
                self.publish(Event(topic, kind, row))
