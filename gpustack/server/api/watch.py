"""Watch streams: a snapshot of matching rows, then their changes, as newline-delimited JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import Select

from gpustack.server.bus import EventType
from gpustack.server.context import ServerContext

KEEPALIVE_SECONDS = 15.0


def _line(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


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
                    yield _line({"type": kind.value, "data": event.data})
                elif row_id in known:
                    known.discard(row_id)
                    yield _line({"type": EventType.DELETED.value, "data": event.data})

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
