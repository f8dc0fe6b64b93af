"""Worker liveness: not_ready when heartbeats stop, unreachable when its /healthz does not answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.models import ModelInstanceState
from gpustack.schemas.workers import WorkerState
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import WorkerRow
from gpustack.server.services import (
    instances_on_worker,
    return_to_pending,
    set_instance_state,
    set_worker_state,
)
from gpustack.utils.errors import describe_error

logger = logging.getLogger(__name__)

MISSED_HEARTBEATS = 3
PROBE_TIMEOUT_SECONDS = 3.0


def heartbeat_overdue(worker: WorkerRow, now: datetime, server_started_at: datetime) -> float | None:
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

    async def expire(session: AsyncSession) -> list[tuple[WorkerRow, float]]:
        now = datetime.now(timezone.utc)
        workers = (await session.execute(select(WorkerRow))).scalars().all()
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
            if await instances_on_worker(session, worker.id, include_lent=True):
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
        for worker_id, silent, problem in silent_and_down:
            row = await session.get(WorkerRow, worker_id)
            if row is None or row.state != WorkerState.NOT_READY.value:
                continue  # it came back meanwhile
            instances = await instances_on_worker(session, row.id, include_lent=True)
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


async def _probe(ctx: ServerContext, worker: WorkerRow) -> str | None:
    """None when the worker's /healthz answers, else what went wrong."""
    url = f"http://{worker.ip}:{worker.port}/healthz"
    try:
        response = await ctx.http.get(url, timeout=PROBE_TIMEOUT_SECONDS)
    except httpx.HTTPError as exc:
        return f"the server cannot reach {url}: {describe_error(exc, with_request=False)}"
    if response.status_code != 200:
        return f"{url} answered HTTP {response.status_code}"
    return None


async def probe_workers(ctx: ServerContext) -> None:
    """Ask every worker's /healthz, not_ready ones included: a worker that does not answer makes its
    running instances unreachable (the gateway stops sending them requests); one that answers again
    makes them running again, whatever its heartbeats do."""
    async with ctx.session() as session:
        workers = (await session.execute(select(WorkerRow))).scalars().all()
    if not workers:
        return
    results = await asyncio.gather(*(_probe(ctx, worker) for worker in workers))
    for worker, problem in zip(workers, results, strict=True):
        logger.debug("worker %s probe: %s", worker.name, problem or "healthy")

    async def record(session: AsyncSession) -> None:
        for worker, problem in zip(workers, results, strict=True):
            row = await session.get(WorkerRow, worker.id)
            if row is None:
                continue
            instances = await instances_on_worker(session, row.id, include_lent=True)
            if problem:
                if row.state == WorkerState.READY.value:
                    logger.warning("worker %s is unreachable: %s", row.name, problem)
                    set_worker_state(row, WorkerState.UNREACHABLE, problem)
                for instance in instances:
                    if instance.state == ModelInstanceState.RUNNING.value:
                        set_instance_state(
                            instance,
                            ModelInstanceState.UNREACHABLE,
                            f"worker {row.name} is unreachable: {problem}",
                        )
                continue
            if row.state == WorkerState.UNREACHABLE.value:
                logger.info("worker %s is reachable again", row.name)
                set_worker_state(row, WorkerState.READY)
            for instance in instances:
                if instance.state == ModelInstanceState.UNREACHABLE.value:
                    set_instance_state(instance, ModelInstanceState.RUNNING)

    await run_transaction(ctx.session, record, what="recording worker probes", retry_stale=True)
