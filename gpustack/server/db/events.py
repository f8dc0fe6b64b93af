"""Publish every committed change of a watched table on the event bus, whoever made it.

Changes are collected at each flush and published after the commit; a rollback discards them. A bus that
reaches other servers is also handed each flush's changes inside the transaction (bus.send_with), so that
they leave with the commit and never without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from gpustack.schemas.model_files import ModelFilePublic
from gpustack.schemas.models import ModelInstancePublic, ModelPublic
from gpustack.schemas.workers import WorkerPublic
from gpustack.server.bus import Bus, Event, EventType
from gpustack.server.db.tables import (
    ApiKeyRow,
    Base,
    ModelFileRow,
    ModelInstanceRow,
    ModelRow,
    UserRow,
    WorkerRow,
)

_PUBLIC_VIEWS: dict[type[Base], type[BaseModel] | None] = {
    WorkerRow: WorkerPublic,
    ModelRow: ModelPublic,
    ModelInstanceRow: ModelInstancePublic,
    ModelFileRow: ModelFilePublic,
    UserRow: None,
    ApiKeyRow: None,
}

_PENDING = "pending_events"


def _describe(row: Any) -> dict[str, Any]:
    view = _PUBLIC_VIEWS[type(row)]
    if view is None:
        return {"id": row.id}
    return view.model_validate(row).model_dump(mode="json")


def _after_flush(session: Session, _context: Any) -> None:
    bus: Bus | None = session.info.get("bus")
    if bus is None:
        return
    flushed: list[Event] = []
    for rows, kind in ((session.new, EventType.CREATED), (session.dirty, EventType.UPDATED)):
        for row in rows:
            if type(row) in _PUBLIC_VIEWS and (kind is EventType.CREATED or session.is_modified(row)):
                flushed.append(Event(row.__tablename__, kind, _describe(row)))
    for row in session.deleted:
        if type(row) in _PUBLIC_VIEWS:
            flushed.append(Event(row.__tablename__, EventType.DELETED, _describe(row)))
    _hand_over(session, flushed)


def _hand_over(session: Session, events: list[Event]) -> None:
    """Keep `events` for publishing after the commit, and send them to the other servers with the
    transaction."""
    bus: Bus | None = session.info.get("bus")
    if bus is None or not events:
        return
    session.info.setdefault(_PENDING, []).extend(events)
    bus.send_with(session.connection(), events)


def _after_commit(session: Session) -> None:
    bus: Bus | None = session.info.get("bus")
    events: list[Event] = session.info.pop(_PENDING, [])
    if bus is None:
        return
    for item in events:
        bus.publish(item)


def _after_rollback(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)


async def publish_after_commit(session: AsyncSession, events: Iterable[Event]) -> None:
    """Changes written without the ORM (a bulk UPDATE), told as the ORM's are: handed to the other
    servers with the transaction, published here after its commit, dropped with a rollback."""
    pending = list(events)
    await session.run_sync(lambda sync_session: _hand_over(sync_session, pending))


def install() -> None:
    """Hook the listeners once per process; sessions opt in by carrying a bus in session.info."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)


TABLES: dict[str, type[Base]] = {str(row_type.__tablename__): row_type for row_type in _PUBLIC_VIEWS}


def describes_whole_row(topic: str) -> bool:
    """Whether events of `topic` carry the row's public view (else only its id)."""
    return _PUBLIC_VIEWS[TABLES[topic]] is not None


async def read_current(session: AsyncSession, topic: str, ids: set[int]) -> dict[int, dict[str, Any]]:
    """The rows of `topic` with these ids as events describe them now; a row deleted since is missing."""
    row_type: Any = TABLES[topic]
    if not describes_whole_row(topic):
        return {row_id: {"id": row_id} for row_id in ids}
    rows = (await session.execute(select(row_type).where(row_type.id.in_(ids)))).scalars()
    return {row.id: _describe(row) for row in rows}
