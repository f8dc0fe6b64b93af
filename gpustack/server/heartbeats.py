"""Worker heartbeats written in groups: one transaction for every heartbeat that came in while the last
one was being written (group commit), instead of one transaction per heartbeat.

At 1,000 workers and the default 5 s interval, 200 heartbeats a second each opened a transaction, read
the whole worker row and wrote it back; on SQLite they queued behind each other for the one writer. Now
they share a transaction and each answers once it is committed, so a 204 still means "recorded" and a
worker that was removed still gets its 404. A heartbeat whose status is what this server last wrote
touches only `last_heartbeat_at` (no row read, no event); the row is rewritten, and watchers told, only
when the status or the worker's readiness changes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.workers import WorkerPublic, WorkerState
from gpustack.server.bus import Event, EventType
from gpustack.server.db.events import publish_after_commit
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import WorkerRow, utcnow
from gpustack.server.services import set_worker_state

logger = logging.getLogger(__name__)

# A status this server wrote is written again after this long even if unchanged: another server (or the
# worker's registration) may have written a different one meanwhile.
REWRITE_AFTER_SECONDS = 60.0


@dataclass
class Heartbeat:
    worker_id: int
    status: dict[str, Any]
    healthy: bool
    state_message: str
    done: asyncio.Future[Recorded | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(frozen=True)
class Recorded:
    """What a committed heartbeat changed of its worker."""

    name: str
    became_ready: bool


class HeartbeatRecorder:
    """Queues heartbeats and writes each group in one transaction; `record` answers once committed."""

    def __init__(self, sessions: Callable[[], AsyncSession]) -> None:
        self._sessions = sessions
        self._queue: list[Heartbeat] = []
        self._writer: asyncio.Task[None] | None = None
        # worker id -> (status this server last committed, when): unchanged statuses are not rewritten.
        self._written: dict[int, tuple[dict[str, Any], float]] = {}

    def forget(self, worker_id: int) -> None:
        """The worker registered again or was removed: its next status is written whatever it says."""
        self._written.pop(worker_id, None)

    async def record(
        self, worker_id: int, status: dict[str, Any], healthy: bool, state_message: str
    ) -> Recorded | None:
        """Record a heartbeat; None when the worker does not exist. Raises what the write raised (a busy
        database's 503 included) for every heartbeat of its group."""
        beat = Heartbeat(worker_id, status, healthy, state_message)
        self._queue.append(beat)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="heartbeat-writer")
        return await beat.done  # a cancelled request cancels only its own wait

    async def _drain(self) -> None:
        while self._queue:
            group, self._queue = self._queue, []
            try:
                recorded = await self._write(group)
            except Exception as exc:  # every waiter gets it; the next group is tried afresh
                for beat in group:
                    if not beat.done.done():
                        beat.done.set_exception(exc)
                continue
            for beat in group:
                if not beat.done.done():
                    beat.done.set_result(recorded.get(beat.worker_id))

    async def _write(self, group: list[Heartbeat]) -> dict[int, Recorded]:
        latest = {beat.worker_id: beat for beat in group}  # a worker's later heartbeat wins
        written: dict[int, dict[str, Any]] = {}
        unwell: list[tuple[str, str]] = []  # logged once committed, not once per attempt

        async def work(session: AsyncSession) -> dict[int, Recorded]:
            written.clear()
            unwell.clear()
            now, clock = utcnow(), time.monotonic()
            rows = (
                await session.execute(
                    select(WorkerRow.id, WorkerRow.name, WorkerRow.state, WorkerRow.state_message).where(
                        WorkerRow.id.in_(latest)
                    )
                )
            ).all()
            recorded: dict[int, Recorded] = {}
            readiness: set[int] = set()  # its state changes too: through the ORM (rare)
            status_only: set[int] = set()  # a new status: one UPDATE for all of them
            for row in rows:
                beat = latest[row.id]
                ready_again = beat.healthy and row.state == WorkerState.NOT_READY.value
                newly_unwell = not beat.healthy and (
                    row.state != WorkerState.NOT_READY.value or row.state_message != beat.state_message
                )
                if newly_unwell:
                    unwell.append((row.name, beat.state_message))
                last = self._written.get(row.id)
                unchanged = (
                    last is not None and last[0] == beat.status and clock - last[1] < REWRITE_AFTER_SECONDS
                )
                if ready_again or newly_unwell:
                    readiness.add(row.id)
                elif not unchanged:
                    status_only.add(row.id)
                recorded[row.id] = Recorded(row.name, ready_again)
            changed = readiness | status_only
            quiet = [worker_id for worker_id in recorded if worker_id not in changed]
            if quiet:
                await session.execute(
                    update(WorkerRow)
                    .where(WorkerRow.id.in_(quiet))
                    .values(last_heartbeat_at=now)
                    .execution_options(synchronize_session=False)
                )
            if status_only:
                statuses = {worker_id: latest[worker_id].status for worker_id in status_only}
                await _write_statuses(session, statuses, now)
            if readiness:
                for worker in (
                    await session.execute(select(WorkerRow).where(WorkerRow.id.in_(readiness)))
                ).scalars():
                    beat = latest[worker.id]
                    worker.status = beat.status
                    worker.last_heartbeat_at = now
                    if not beat.healthy:
                        set_worker_state(worker, WorkerState.NOT_READY, beat.state_message)
                    else:
                        # Reachability is judged by the server's own probe; a heartbeat only ends not_ready.
                        set_worker_state(worker, WorkerState.READY)
            written.update({worker_id: latest[worker_id].status for worker_id in changed})
            return recorded

        recorded = await run_transaction(
            self._sessions, work, what=f"recording {len(latest)} worker heartbeats"
        )
        for name, message in unwell:
            logger.warning("worker %s is not ready: %s", name, message)
        clock = time.monotonic()
        for worker_id, status in written.items():
            self._written[worker_id] = (status, clock)
        return recorded


async def _write_statuses(session: AsyncSession, statuses: dict[int, dict[str, Any]], now: datetime) -> None:
    """New statuses of workers whose state stays: one executemany UPDATE, however many (each statement is
    a round trip to the database's thread, which waits for the event loop to let it run), and the events
    the ORM would have published for them."""
    table = cast(Table, WorkerRow.__table__)
    await session.execute(
        update(table)
        .where(table.c.id == bindparam("worker_id"))
        .values(status=bindparam("new_status"), last_heartbeat_at=now, updated_at=now),
        [{"worker_id": worker_id, "new_status": status} for worker_id, status in statuses.items()],
    )
    others = [column for column in table.c if column.name != "status"]
    rows = (await session.execute(select(*others).where(table.c.id.in_(statuses)))).mappings()
    await publish_after_commit(
        session,
        [
            Event(
                WorkerRow.__tablename__,
                EventType.UPDATED,
                WorkerPublic.model_validate({**row, "status": statuses[row["id"]]}).model_dump(mode="json"),
            )
            for row in rows
        ],
    )
