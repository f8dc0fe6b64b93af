"""Watch streams encode each event once for all their watchers, and every watcher still reads it whole."""

from __future__ import annotations

import json

from gpustack.server.api import watch
from gpustack.server.bus import Event, EventType


def test_one_event_is_encoded_once_and_read_the_same_by_every_watcher() -> None:
    event = Event("models", EventType.UPDATED, {"id": 7, "name": "m", "description": "é"})
    first = watch._event_line(EventType.UPDATED, event)
    assert watch._event_line(EventType.UPDATED, event) is first  # the same bytes, not encoded again
    assert json.loads(first) == {"type": "updated", "data": {"id": 7, "name": "m", "description": "é"}}
    # The same event as another kind (new to this watcher, or gone from its filter) is its own line.
    created = watch._event_line(EventType.CREATED, event)
    assert json.loads(created)["type"] == "created"
    deleted = watch._event_line(EventType.DELETED, event)
    assert json.loads(deleted) == {"type": "deleted", "data": event.data}


def test_a_different_event_with_equal_content_or_a_reused_id_is_encoded_afresh() -> None:
    old = Event("models", EventType.UPDATED, {"id": 1, "description": "old"})
    watch._event_line(EventType.UPDATED, old)
    for n in range(watch._ENCODED_MAX + 10):  # pushes the first one out
        watch._event_line(EventType.UPDATED, Event("models", EventType.UPDATED, {"id": n}))
    assert len(watch._ENCODED) <= watch._ENCODED_MAX
    new = Event("models", EventType.UPDATED, {"id": 1, "description": "new"})
    assert json.loads(watch._event_line(EventType.UPDATED, new))["data"]["description"] == "new"


async def test_a_watch_is_woken_only_for_its_rows_and_still_told_when_one_leaves_its_filter() -> None:
    from gpustack.server.bus import EventBus

    bus = EventBus()
    mine = watch._admitting({1}, lambda data: data["worker_id"] == 7)  # row 1 came in the snapshot
    async with bus.subscribe("model_instances") as subscription:
        subscription.accepts = mine
        for event in (
            Event("model_instances", EventType.UPDATED, {"id": 2, "worker_id": 8}),  # another worker's
            Event("model_instances", EventType.UPDATED, {"id": 3, "worker_id": 7}),  # new to this watch
            Event("model_instances", EventType.UPDATED, {"id": 1, "worker_id": 8}),  # moved away
            Event("model_instances", EventType.UPDATED, {"id": 3, "worker_id": 9}),  # moved away too
            Event("model_instances", EventType.DELETED, {"id": 3, "worker_id": 9}),
            Event("model_instances", EventType.UPDATED, {"id": 3, "worker_id": 9}),  # a reused id, elsewhere
        ):
            bus.publish(event)
        seen = []
        while (event := await subscription.get(timeout=0.01)) is not None:
            seen.append((event.data["id"], event.type.value))
    assert seen == [(3, "updated"), (1, "updated"), (3, "updated"), (3, "deleted")]
