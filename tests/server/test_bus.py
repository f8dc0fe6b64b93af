"""The event bus delivers committed changes to subscribers and tells a slow one to resync."""

from __future__ import annotations

import pytest

from gpustack.server.bus import Event, EventBus, EventType


async def test_subscribers_get_only_their_topics() -> None:
    bus = EventBus()
    async with bus.subscribe("models") as subscription:
        bus.publish(Event("workers", EventType.UPDATED, {"id": 1}))
        bus.publish(Event("models", EventType.CREATED, {"id": 2}))
        event = await subscription.get(timeout=1)
        assert event is not None and event.data == {"id": 2}
        assert await subscription.get(timeout=0.01) is None


async def test_a_subscriber_that_falls_behind_is_told_instead_of_silently_losing_events() -> None:
    bus = EventBus(max_pending=2)
    async with bus.subscribe("models") as subscription:
        for i in range(3):
            bus.publish(Event("models", EventType.UPDATED, {"id": i}))
        assert (await subscription.get()) is not None
        assert (await subscription.get()) is not None
        with pytest.raises(OverflowError):
            await subscription.get()
