"""Publish/subscribe of resource changes: feeds watch streams, controllers and caches.

`EventBus` fans events out within one process; that is all a single server needs. With several servers on
one PostgreSQL, `bus_postgres.PostgresEventBus` extends it: what a transaction changes is also sent to the
other servers with that transaction (NOTIFY), and what they commit arrives here as events. Both answer to
the `Bus` protocol, which is all that publishers (db/events.py) and subscribers use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

from sqlalchemy.engine import Connection

logger = logging.getLogger(__name__)


class EventType(str, Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class Event:
    topic: str  # table name: "workers", "models", "model_instances", ...
    type: EventType
    data: dict[str, Any]
    # When it was published (monotonic), for the delivery delay in the metrics.
    published_at: float = field(default=0.0, compare=False)


class BusObserver(Protocol):
    """What the metrics learn from the bus."""

    def published(self, topic: str) -> None: ...

    def delivered(self, topic: str, delay: float) -> None: ...

    def overflowed(self) -> None: ...


class Subscription:
    """A bounded queue of events; a subscriber that falls too far behind is told to resync."""

    def __init__(self, topics: frozenset[str], max_pending: int, observer: BusObserver | None = None) -> None:
        self.topics = topics
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(max_pending)
        self.overflowed = False
        self.observer = observer
        # What the subscriber wants of its topics, asked as each event is published: a thousand workers'
        # assignment watches each want their own instances, and waking all of them for every event
        # cost a coroutine switch each (most of a busy server's CPU at 1,000 workers).
        self.accepts: Callable[[Event], bool] | None = None

    def offer(self, event: Event) -> None:
        if self.overflowed or (self.accepts is not None and not self.accepts(event)):
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The reader will see the overflow and re-list; dropping silently would lose changes.
            self.overflowed = True
            if self.observer is not None:
                self.observer.overflowed()

    def resync(self) -> None:
        """Tell the reader that it may have missed events (the next get raises OverflowError once the
        queue is drained): it re-lists what it follows, as after falling behind."""
        self.overflowed = True
        try:
            self.queue.put_nowait(None)  # wakes a reader waiting on an empty queue
        except asyncio.QueueFull:
            pass  # the reader is not waiting: it drains the queue and then sees the overflow

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None on timeout. Raises OverflowError once the subscriber missed events."""
        if self.overflowed and self.queue.empty():
            raise OverflowError("subscriber fell behind")
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if event is None:  # put there by resync()
            raise OverflowError("subscriber may have missed events")
        if self.observer is not None:
            self.observer.delivered(event.topic, time.monotonic() - event.published_at)
        return event


class Bus(Protocol):
    """What publishers and subscribers see of an event bus, whichever carries it."""

    observer: BusObserver | None

    @property
    def subscriber_count(self) -> int: ...

    def publish(self, event: Event) -> None:
        """Deliver a committed change to this process's subscribers."""

    def send_with(self, connection: Connection, events: list[Event]) -> None:
        """Hand changes flushed in the transaction on `connection` to the other servers; they go out only
        if that transaction commits."""

    def subscribe(self, *topics: str) -> AbstractAsyncContextManager[Subscription]: ...

    def resync_all(self) -> None:
        """Tell every subscriber it may have missed events."""


class EventBus:
    """In-process fan-out: every subscriber of a topic gets each event published on it."""

    def __init__(self, max_pending: int = 10_000) -> None:
        self._subscriptions: set[Subscription] = set()
        self._max_pending = max_pending
        self.observer: BusObserver | None = None

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def publish(self, event: Event) -> None:
        if self.observer is not None:
            event = replace(event, published_at=time.monotonic())
            self.observer.published(event.topic)
        for subscription in list(self._subscriptions):
            if event.topic in subscription.topics:
                subscription.offer(event)

    def send_with(self, connection: Connection, events: list[Event]) -> None:
        """Nothing: in one process, publish() after the commit reaches everyone."""

    def resync_all(self) -> None:
        for subscription in list(self._subscriptions):
            subscription.resync()

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(frozenset(topics), self._max_pending, self.observer)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
