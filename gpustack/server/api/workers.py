"""Workers: registration and heartbeats from workers, listing and removal for administrators."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack import __version__
from gpustack.schemas.common import PaginatedList
from gpustack.schemas.workers import (
    WorkerPublic,
    WorkerRegistered,
    WorkerRegistration,
    WorkerState,
    WorkerStatusReport,
    WorkerUpdate,
)
from gpustack.server import security
from gpustack.server.api.common import PageParams, get_or_404, paginate
from gpustack.server.api.watch import watch_rows
from gpustack.server.auth import (
    Principal,
    context,
    credential_cache,
    require_admin,
    require_registrar,
    require_worker,
)
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import WorkerRow, utcnow
from gpustack.server.errors import Conflict, Forbidden, NotFound
from gpustack.server.services import instances_on_worker, return_to_pending, set_worker_state
from gpustack.utils.versions import check as compatibility

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v2/workers", tags=["workers"])


@router.get("", response_model=PaginatedList[WorkerPublic], dependencies=[Depends(require_admin)])
async def list_workers(
    request: Request,
    params: PageParams = Depends(),
    name: str | None = None,
    state: WorkerState | None = None,
    search: str | None = Query(None, description="part of the name, hostname or IP"),
    watch: bool = Query(False, description="stream a snapshot then changes as newline-delimited JSON"),
) -> Response:
    statement = select(WorkerRow).order_by(WorkerRow.id)
    if name:
        statement = statement.where(WorkerRow.name == name)
    if state:
        statement = statement.where(WorkerRow.state == state.value)
    if search:
        pattern = f"%{search}%"
        statement = statement.where(
            or_(WorkerRow.name.ilike(pattern), WorkerRow.hostname.ilike(pattern), WorkerRow.ip.ilike(pattern))
        )
    if watch:
        needle = (search or "").lower()
        return watch_rows(
            context(request),
            statement,
            WorkerPublic,
            lambda w: (
                (not name or w["name"] == name)
                and (not state or w["state"] == state.value)
                and any(needle in w[field].lower() for field in ("name", "hostname", "ip"))
            ),
        )
    async with context(request).session() as session:
        return await paginate(session, statement, params, WorkerPublic)


@router.get("/{worker_id}", response_model=WorkerPublic, dependencies=[Depends(require_admin)])
async def get_worker(request: Request, worker_id: int) -> WorkerRow:
    async with context(request).session() as session:
        return await get_or_404(session, WorkerRow, worker_id, "worker")


@router.patch("/{worker_id}", response_model=WorkerPublic, dependencies=[Depends(require_admin)])
async def update_worker(request: Request, worker_id: int, body: WorkerUpdate) -> WorkerRow:
    ctx = context(request)

    async def update(session: AsyncSession) -> WorkerRow:
        worker: WorkerRow = await get_or_404(session, WorkerRow, worker_id, "worker")
        if body.labels is not None:
            worker.user_labels = body.labels
            worker.labels = {**(worker.reported_labels or {}), **body.labels}
        return worker

    worker = await run_transaction(ctx.session, update, what=f"updating worker {worker_id}")
    ctx.schedule_wanted.set()
    return worker


@router.delete("/{worker_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_worker(request: Request, worker_id: int) -> None:
    ctx = context(request)

    async def delete(session: AsyncSession) -> None:
        worker = await get_or_404(session, WorkerRow, worker_id, "worker")
        for instance in await instances_on_worker(session, worker_id, include_lent=True):
            return_to_pending(instance, f"worker {worker.name} was removed; placing the instance again")
        await session.delete(worker)

    await run_transaction(ctx.session, delete, what=f"deleting worker {worker_id}", retry_stale=True)
    credential_cache(request).clear()  # its credential stops working now, not in 30 s
    ctx.heartbeats.forget(worker_id)
    ctx.schedule_wanted.set()


async def _unique_name(session: AsyncSession, wanted: str, uuid: str) -> str:
    """`wanted`, or a variant with the worker's uuid when another machine already uses that name."""
    candidate = f"{wanted[:200]}-{uuid[:8]}"
    existing = (await session.execute(select(WorkerRow).where(WorkerRow.name == candidate))).scalar()
    if existing is None or existing.uuid == uuid:
        return candidate
    return f"{wanted[:190]}-{uuid}"


@router.post("/register", response_model=WorkerRegistered, dependencies=[Depends(require_registrar)])
async def register_worker(request: Request, body: WorkerRegistration) -> WorkerRegistered:
    """Join with the cluster token; the answer carries the worker's own credential for everything else.
    A worker whose gpustack version cannot work with this server's is refused (409), saying what to do."""
    ctx = context(request)
    versions = compatibility(__version__, body.version, f"worker {body.name!r} ({body.ip})")
    if not versions.compatible:
        logger.warning("registration refused: %s", versions.message)
        raise Conflict(versions.message)
    if versions.message:
        logger.warning("%s", versions.message)
    async with ctx.session() as session:
        by_name = (await session.execute(select(WorkerRow).where(WorkerRow.name == body.name))).scalar()
        name = body.name
        if by_name is not None and by_name.uuid != body.uuid:
            name = await _unique_name(session, body.name, body.uuid)
            logger.warning(
                "worker name %r is already used by another machine (%s); registering %s as %r",
                body.name,
                by_name.ip,
                body.ip,
                name,
            )
        worker = (await session.execute(select(WorkerRow).where(WorkerRow.uuid == body.uuid))).scalar()
        if worker is None:
            worker = WorkerRow(uuid=body.uuid, name=name, state=WorkerState.READY.value)
            session.add(worker)
        elif worker.name != name:
            logger.info("worker %r is now called %r", worker.name, name)
        worker.name = name
        worker.hostname = body.hostname
        worker.ip = body.ip
        worker.port = body.port
        # The administrator's labels (PATCH) survive the worker's restarts and win over its own.
        worker.reported_labels = body.labels
        worker.labels = {**body.labels, **(worker.user_labels or {})}
        worker.status = body.status.model_dump(mode="json")
        worker.system_reserved = body.system_reserved.model_dump()
        worker.heartbeat_interval = body.heartbeat_interval
        worker.last_heartbeat_at = utcnow()
        if body.healthy:
            set_worker_state(worker, WorkerState.READY)
        else:
            set_worker_state(worker, WorkerState.NOT_READY, body.state_message)
        await session.flush()
        for instance in await instances_on_worker(session, worker.id):
            instance.worker_name = worker.name
            instance.worker_ip = worker.ip
        await session.commit()
    logger.info("worker %s registered from %s:%d", worker.name, worker.ip, worker.port)
    ctx.heartbeats.forget(worker.id)
    ctx.schedule_wanted.set()
    return WorkerRegistered.model_validate(
        {
            **WorkerPublic.model_validate(worker).model_dump(),
            "credential": security.worker_credential(ctx.session_secret, worker.id),
            "server_version": __version__,
        }
    )


@router.put("/{worker_id}/status", status_code=204)
async def report_status(
    request: Request, worker_id: int, body: WorkerStatusReport, principal: Principal = Depends(require_worker)
) -> None:
    ctx = context(request)
    if principal.worker_id != worker_id:
        raise Forbidden(
            f"a worker reports only its own status; this credential belongs to worker {principal.worker_id}"
        )
    logger.debug("worker %d reports its status (healthy: %s)", worker_id, body.healthy)
    recorded = await ctx.heartbeats.record(
        worker_id, body.status.model_dump(mode="json"), body.healthy, body.state_message
    )
    if recorded is None:
        raise NotFound(f"worker {worker_id} not found")
    if recorded.became_ready:
        logger.info("worker %s is ready again", recorded.name)
        ctx.schedule_wanted.set()
