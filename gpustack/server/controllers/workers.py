"""Worker liveness: not_ready when heartbeats stop, unreachable when its /healthz does not answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.models import ModelInstanceState
from gpustack.schemas.workers import WorkerState
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, WorkerRow
from gpustack.server.gateway.upstream import UpstreamError
from gpustack.server.services import (
    involved_workers,
    return_to_pending,
    set_instance_state,
    set_worker_state,
)

logger = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
PROBE_TIMEOUT_SECONDS = 3.0


class _HeartbeatTimes(Protocol):
    @property
    def last_heartbeat_at(self) -> datetime | None: ...

    @property
    def heartbeat_interval(self) -> float: ...


def heartbeat_overdue(worker: _HeartbeatTimes, now: datetime, server_started_at: datetime) -> float | None:
    """Seconds since the last heartbeat if more than three were missed, else None.

    Heartbeats sent while the server was down cannot have arrived, so the clock starts at server start.
    """
    last = max(worker.last_heartbeat_at or server_started_at, server_started_at)
    silent = (now - last).total_seconds()
    return silent if silent > MISSED_HEARTBEATS * worker.heartbeat_interval else None


async def check_heartbeats(ctx: ServerContext) -> None:
    """Workers that stopped heartbeating become not_ready (nothing new is placed on them) and are
    asked at once whether they still answer. If one does not, its running instances are unreachable
    (the gateway stops routing to them) and, after --worker-lost-grace without a heartbeat, placed
    elsewhere. A worker that still answers (merely slow, or with heartbeats queued behind a traffic
    spike) keeps its engines and the streams flowing through them."""
    started = datetime.fromtimestamp(ctx.started_at, timezone.utc)
    grace = ctx.config.worker_lost_grace

    # A read of three columns first: with every worker on time (the usual case, every second) there is
    # no transaction, and no worker's status is loaded.
    async with ctx.session() as session:
        timings = (
            await session.execute(
                select(WorkerRow.id, WorkerRow.last_heartbeat_at, WorkerRow.heartbeat_interval)
            )
        ).all()
    now = datetime.now(timezone.utc)
    overdue = [row.id for row in timings if heartbeat_overdue(row, now, started) is not None]
    if not overdue:
        return

    async def expire(session: AsyncSession) -> list[tuple[WorkerRow, float]]:
        now = datetime.now(timezone.utc)
        workers = (await session.execute(select(WorkerRow).where(WorkerRow.id.in_(overdue)))).scalars().all()
        holding = await _instances_by_worker(session)
        silent_ones = []
        for worker in workers:
            silent = heartbeat_overdue(worker, now, started)
            if silent is None:
                continue
            if worker.state != WorkerState.NOT_READY.value:
                message = (
                    f"no heartbeat for {silent:.0f}s (expected every {worker.heartbeat_interval:g}s); "
                    "check that the worker is running and see its log"
                )
                logger.warning("worker %s is not ready: %s", worker.name, message)
                set_worker_state(worker, WorkerState.NOT_READY, message)
            if holding.get(worker.id):
                silent_ones.append((worker, silent))
        return silent_ones

    silent_workers = await run_transaction(ctx.session, expire, what="checking heartbeats", retry_stale=True)
    if not silent_workers:
        return
    # Only a worker that does not answer either has lost its engines; one that answers is slow.
    problems = await asyncio.gather(*(_probe(ctx, worker) for worker, _ in silent_workers))
    silent_and_down = []
    for (worker, silent), problem in zip(silent_workers, problems, strict=True):
        if problem:
            silent_and_down.append((worker.id, silent, problem))
        else:
            logger.debug("worker %s misses heartbeats but answers: keeping its instances", worker.name)

    async def settle(session: AsyncSession) -> bool:
        moved = False
        holding = await _instances_by_worker(session)
        for worker_id, silent, problem in silent_and_down:
            row = await session.get(WorkerRow, worker_id)
            if row is None or row.state != WorkerState.NOT_READY.value:
                continue  # it came back meanwhile
            instances = [i for i in holding.get(row.id, []) if i.worker_id is not None]
            if silent <= grace:
                for instance in instances:
                    if instance.state == ModelInstanceState.RUNNING.value:
                        set_instance_state(
                            instance,
                            ModelInstanceState.UNREACHABLE,
                            f"worker {row.name} is not ready and does not answer: {problem}",
                        )
                continue
            for instance in instances:
                return_to_pending(
                    instance,
                    f"worker {row.name} became not_ready: no heartbeat for over {grace:g}s and it does not "
                    f"answer ({problem}); placing the instance again",
                )
            if instances:
                moved = True
                logger.warning("worker %s is lost (%s); its instances are placed again", row.name, problem)
        return moved

    if not silent_and_down:
        return
    if await run_transaction(ctx.session, settle, what="settling silent workers", retry_stale=True):
        ctx.schedule_wanted.set()  # the instances it held are pending again


async def _instances_by_worker(session: AsyncSession) -> dict[int, list[ModelInstanceRow]]:
    """Every placed instance under each worker it involves (runs it or lends it GPUs): one read for
    all workers instead of one per worker."""
    placed = await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.worker_id.is_not(None)))
    found: dict[int, list[ModelInstanceRow]] = {}
    for instance in placed.scalars():
        for worker_id in involved_workers(instance):
            found.setdefault(worker_id, []).append(instance)
    return found


async def _probe(ctx: ServerContext, worker: Any) -> str | None:
    """None when the worker's /healthz answers, else what went wrong. A kept-alive connection per
    worker and a request written by hand: at 1,000 workers every 5 s, a client library's request cost
    most of the server's CPU."""
    url = f"http://{worker.ip}:{worker.port}/healthz"
    head = f"GET /healthz HTTP/1.1\r\nHost: {worker.ip}:{worker.port}\r\n\r\n".encode()

    async def ask() -> int:
        response = await ctx.probes.send(worker.ip, int(worker.port), head)
        try:
            await response.read()
        finally:
            response.release()
        return response.status

    try:
        status = await asyncio.wait_for(ask(), PROBE_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        return f"the server cannot reach {url}: no answer within {PROBE_TIMEOUT_SECONDS:g} s"
    except UpstreamError as exc:
        return f"the server cannot reach {url}: {exc}"
    if status != 200:
        return f"{url} answered HTTP {status}"
    return None


async def probe_workers(ctx: ServerContext) -> None:
    """Ask every worker's /healthz, not_ready ones included: a worker that does not answer makes its
    running instances unreachable (the gateway stops sending them requests); one that answers again
    makes them running again, whatever its heartbeats do."""
    async with ctx.session() as session:
        columns = (WorkerRow.id, WorkerRow.name, WorkerRow.ip, WorkerRow.port, WorkerRow.state)
        workers = (await session.execute(select(*columns))).all()
    if not workers:
        return
    results = await asyncio.gather(*(_probe(ctx, worker) for worker in workers))
    for worker, problem in zip(workers, results, strict=True):
        logger.debug("worker %s probe: %s", worker.name, problem or "healthy")

    problems = {worker.id: problem for worker, problem in zip(workers, results, strict=True) if problem}
    back = {
        worker.id
        for worker in workers
        if worker.id not in problems and worker.state == WorkerState.UNREACHABLE.value
    }

    async def record(session: AsyncSession) -> None:
        # One read of the instances that may change (running on a worker that did not answer, or
        # unreachable ones), not one per worker: with every worker healthy there is nothing to write.
        wanted = [ModelInstanceState.UNREACHABLE.value]
        if problems:
            wanted.append(ModelInstanceState.RUNNING.value)
        instances = (
            (
                await session.execute(
                    select(ModelInstanceRow).where(
                        ModelInstanceRow.worker_id.is_not(None), ModelInstanceRow.state.in_(wanted)
                    )
                )
            )
            .scalars()
            .all()
        )
        for worker_id in sorted(problems.keys() | back):
            row = await session.get(WorkerRow, worker_id)
            if row is None:
                continue
            problem = problems.get(worker_id)
            if problem and row.state == WorkerState.READY.value:
                logger.warning("worker %s is unreachable: %s", row.name, problem)
                set_worker_state(row, WorkerState.UNREACHABLE, problem)
            elif not problem and row.state == WorkerState.UNREACHABLE.value:
                logger.info("worker %s is reachable again", row.name)
                set_worker_state(row, WorkerState.READY)
        names = {worker.id: worker.name for worker in workers}
        for instance in instances:
            involved = involved_workers(instance)
            down = sorted(involved & problems.keys())
            if down and instance.state == ModelInstanceState.RUNNING.value:
                set_instance_state(
                    instance,
                    ModelInstanceState.UNREACHABLE,
                    f"worker {names[down[0]]} is unreachable: {problems[down[0]]}",
                )
            elif (
                not down
                and instance.state == ModelInstanceState.UNREACHABLE.value
                and involved <= names.keys()
            ):
                set_instance_state(instance, ModelInstanceState.RUNNING)

    if not problems and not back:
        async with ctx.session() as session:
            unreachable = await session.scalar(
                select(ModelInstanceRow.id)
                .where(ModelInstanceRow.state == ModelInstanceState.UNREACHABLE.value)
                .limit(1)
            )
        if unreachable is None:
            return  # every worker answered and nothing was unreachable: nothing to record

    await run_transaction(ctx.session, record, what="recording worker probes", retry_stale=True)
