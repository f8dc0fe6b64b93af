"""Caches that must forget what any server changed: a key, user or worker deleted or changed through one
server stops working at every server at once, not when a cache entry expires. Fed by the event bus, which
carries other servers' changes too (bus_postgres.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from gpustack.server.bus import Bus, Event, EventType
from gpustack.server.db.tables import ApiKeyRow, UserRow, WorkerRow

logger = logging.getLogger(__name__)

_TOPICS = (UserRow.__tablename__, ApiKeyRow.__tablename__, WorkerRow.__tablename__)


def changes_credentials(event: Event) -> bool:
    """Whether a verified credential may no longer hold: a user changed (role, removal), a key changed or
    was deleted, a worker was removed. A new key or a worker's heartbeat changes nothing verified."""
    if event.topic == WorkerRow.__tablename__:
        return event.type is EventType.DELETED
    return event.type is not EventType.CREATED


async def clear_on_credential_changes(bus: Bus, clear: Callable[[], None]) -> None:
    """Call `clear()` after every change that may revoke a cached credential, for the life of the server."""
    while True:
        async with bus.subscribe(*_TOPICS) as subscription:
            try:
                while True:
                    event = await subscription.get()
                    if event is not None and changes_credentials(event):
                        clear()
            except OverflowError:
                # Changes may have been missed: forget everything rather than trust what is cached.
                logger.info("credential cache: events were missed; clearing it")
                clear()
