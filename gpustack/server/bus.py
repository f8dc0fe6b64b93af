"""In-process publish/subscribe of resource changes: feeds watch streams, controllers and caches."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Protocol

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

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            # The reader will see the overflow and re-list; dropping silently would lose changes.
            self.overflowed = True
            if self.observer is not None:
                self.observer.overflowed()

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event; None on timeout. Raises OverflowError once the subscriber missed events."""
        if self.overflowed and self.queue.empty():
            raise OverflowError("subscriber fell behind")
        try:
            event = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if event is not None and self.observer is not None:
            self.observer.delivered(event.topic, time.monotonic() - event.published_at)
        return event


class EventBus:
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

    @asynccontextmanager
    async def subscribe(self, *topics: str) -> AsyncIterator[Subscription]:
        subscription = Subscription(frozenset(topics), self._max_pending, self.observer)
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
