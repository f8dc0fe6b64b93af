"""Watch streams: a snapshot of matching rows, then their changes, as newline-delimited JSON."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select

from gpustack.server.bus import Event, EventType
from gpustack.server.context import ServerContext

KEEPALIVE_SECONDS = 15.0


def _line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


# One event reaches every watcher of its topic: its line is encoded once, not once per watcher (a UI's
# hundred open pages, a thousand workers' assignment watches). Keyed by the event object, which is kept
# alive in the entry so that its id cannot be reused; an event older than the last few hundred is simply
# encoded again.
_ENCODED: OrderedDict[tuple[int, str], tuple[Event, bytes]] = OrderedDict()
_ENCODED_MAX = 512


def _event_line(kind: EventType, event: Event) -> bytes:
    key = (id(event), kind.value)
    cached = _ENCODED.get(key)
    if cached is not None and cached[0] is event:
        return cached[1]
    line = _line({"type": kind.value, "data": event.data})
    _ENCODED[key] = (event, line)
    if len(_ENCODED) > _ENCODED_MAX:
        _ENCODED.popitem(last=False)
    return line


def _admitting(admitted: set[int], matches: Callable[[dict[str, Any]], bool]) -> Callable[[Event], bool]:
    """A bus filter for a watch: events of rows it let through before (or that were in the snapshot),
    and of rows that match now. It may let through more than the stream sends, never less."""

    def accepts(event: Event) -> bool:
        row_id = event.data["id"]
        if row_id in admitted:
            if event.type is EventType.DELETED:
                admitted.discard(row_id)
            return True
        if event.type is not EventType.DELETED and matches(event.data):
            admitted.add(row_id)
            return True
        return False

    return accepts


def watch_response(
    ctx: ServerContext,
    topic: str,
    snapshot: Callable[[], Any],
    matches: Callable[[dict[str, Any]], bool],
) -> StreamingResponse:
    """Stream `{"type": "snapshot", "items": [...]}` then `{"type": created|updated|deleted, "data": {...}}`.

    A row that stops matching the filter (an instance moved to another worker) is sent as deleted, so a
    watcher's view stays exact. `{"type": "keepalive"}` lines keep idle connections honest.
    """

    async def stream() -> AsyncIterator[bytes]:
        async with ctx.bus.subscribe(topic) as subscription:
            items = await snapshot()
            known = {item["id"] for item in items}
            # From here the bus passes on only what this stream may send: rows that match, and rows it
            # ever let through (one that stops matching is sent as deleted). Until now, everything.
            subscription.accepts = _admitting(set(known), matches)
            yield _line({"type": "snapshot", "items": items})
            while True:
                try:
                    event = await subscription.get(timeout=KEEPALIVE_SECONDS)
                except OverflowError:
                    return  # the client reconnects and gets a fresh snapshot
                if event is None:
                    yield _line({"type": "keepalive"})
                    continue
                row_id = event.data["id"]
                if event.type is not EventType.DELETED and matches(event.data):
                    kind = EventType.CREATED if row_id not in known else event.type
                    known.add(row_id)
                    yield _event_line(kind, event)
                elif row_id in known:
                    known.discard(row_id)
                    yield _event_line(EventType.DELETED, event)

    return StreamingResponse(stream(), media_type="application/x-ndjson")


def watch_rows(
    ctx: ServerContext,
    statement: Select[Any],
    view: type[BaseModel],
    matches: Callable[[dict[str, Any]], bool],
) -> StreamingResponse:
    """A watch of the table `statement` selects from: its rows as `view` first, then the changes that
    `matches` (the same filter as the statement's, on the event's public data)."""
    table = statement.get_final_froms()[0]

    async def snapshot() -> list[dict[str, Any]]:
        async with ctx.session() as session:
            rows = (await session.execute(statement)).scalars().all()
            return [view.model_validate(row).model_dump(mode="json") for row in rows]

    return watch_response(ctx, str(getattr(table, "name", table)), snapshot, matches)
