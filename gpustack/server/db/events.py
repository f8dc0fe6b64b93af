"""Publish every committed change of a watched table on the event bus, whoever made it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import event
from sqlalchemy.orm import Session

from gpustack.schemas.model_files import ModelFilePublic
from gpustack.schemas.models import ModelInstancePublic, ModelPublic
from gpustack.schemas.workers import WorkerPublic
from gpustack.server.bus import Event, EventBus, EventType
from gpustack.server.db.tables import ApiKeyRow, ModelFileRow, ModelInstanceRow, ModelRow, UserRow, WorkerRow

_PUBLIC_VIEWS: dict[type, type[BaseModel] | None] = {
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
    if "bus" not in session.info:
        return
    pending: list[Event] = session.info.setdefault(_PENDING, [])
    for rows, kind in ((session.new, EventType.CREATED), (session.dirty, EventType.UPDATED)):
        for row in rows:
            if type(row) in _PUBLIC_VIEWS and (kind is EventType.CREATED or session.is_modified(row)):
                pending.append(Event(row.__tablename__, kind, _describe(row)))
    for row in session.deleted:
        if type(row) in _PUBLIC_VIEWS:
            pending.append(Event(row.__tablename__, EventType.DELETED, _describe(row)))


def _after_commit(session: Session) -> None:
    bus: EventBus | None = session.info.get("bus")
    events: list[Event] = session.info.pop(_PENDING, [])
    if bus is None:
        return
    for item in events:
        bus.publish(item)


def _after_rollback(session: Session, _previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)


def install() -> None:
    """Hook the listeners once per process; sessions opt in by carrying a bus in session.info."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_soft_rollback", _after_rollback)
