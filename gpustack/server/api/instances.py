"""Model instances: listing and watching, state reports from workers, logs, and recreation."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Text, and_, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.models import ModelInstancePublic, ModelInstanceState, ModelInstanceStateUpdate
from gpustack.server.api.common import PageParams, QueryId, get_or_404, paginate
from gpustack.server.api.watch import watch_response
from gpustack.server.auth import Principal, context, require_admin, require_admin_or_worker, require_worker
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, WorkerRow
from gpustack.server.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable
from gpustack.server.services import involved_workers, set_instance_state
from gpustack.utils.errors import describe_error
from gpustack.utils.relay import stream_back

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v2/model-instances", tags=["model-instances"])


@router.get("", response_model=None)
async def list_instances(
    request: Request,
    params: PageParams = Depends(),
    model_id: QueryId = None,
    worker_id: QueryId = None,
    state: ModelInstanceState | None = None,
    watch: bool = Query(False, description="stream a snapshot then changes as newline-delimited JSON"),
    principal: Principal = Depends(require_admin_or_worker),
) -> Any:
    """Administrators list any instances; a worker lists only its own (`worker_id` = its id), which
    includes those it lends GPUs to."""
    ctx = context(request)
    if principal.is_worker and worker_id != principal.worker_id:
        raise Forbidden(f"a worker lists only its own instances: pass worker_id={principal.worker_id}")
    statement = select(ModelInstanceRow).order_by(ModelInstanceRow.id)
    if model_id is not None:
        statement = statement.where(ModelInstanceRow.model_id == model_id)
    if worker_id is not None:
        statement = statement.where(ModelInstanceRow.worker_id == worker_id)
    if state is not None:
        statement = statement.where(ModelInstanceRow.state == state.value)
    if not watch:
        async with ctx.session() as session:
            return await paginate(session, statement, params, ModelInstancePublic)

    def involves(data: dict[str, Any]) -> bool:
        """A watching worker sees the instances it runs and those it lends GPUs to (their claims are its)."""
        return data["worker_id"] == worker_id or any(
            part["worker_id"] == worker_id for part in data.get("subordinate_workers") or []
        )

    def matches(data: dict[str, Any]) -> bool:
        return (
            (model_id is None or data["model_id"] == model_id)
            and (worker_id is None or involves(data))
            and (state is None or data["state"] == state.value)
        )

    async def snapshot() -> list[dict[str, Any]]:
        # With a worker filter, subordinate parts are in JSON, which SQL cannot search the same way on
        # every database: SQL keeps the worker's own instances and every distributed one (few), and
        # `matches` picks among those. Reading every placed instance made each of a thousand workers'
        # watches read ten thousand rows.
        query = statement
        if worker_id is not None:
            query = select(ModelInstanceRow).where(
                or_(
                    ModelInstanceRow.worker_id == worker_id,
                    and_(
                        ModelInstanceRow.worker_id.is_not(None),
                        cast(ModelInstanceRow.subordinate_workers, Text) != "[]",
                    ),
                )
            ).order_by(ModelInstanceRow.id)
        async with ctx.session() as session:
            rows = (await session.execute(query)).scalars().all()
            items = [ModelInstancePublic.model_validate(row).model_dump(mode="json") for row in rows]
        return [item for item in items if matches(item)]

    return watch_response(ctx, ModelInstanceRow.__tablename__, snapshot, matches)


@router.get("/{instance_id}", response_model=ModelInstancePublic)
async def get_instance(
    request: Request, instance_id: int, principal: Principal = Depends(require_admin_or_worker)
) -> ModelInstanceRow:
    async with context(request).session() as session:
        row = await get_or_404(session, ModelInstanceRow, instance_id, "model instance")
    if principal.is_worker and principal.worker_id not in involved_workers(row):
        raise NotFound(f"model instance {instance_id} not found")  # what it does not run, it cannot see
    return row


@router.delete("/{instance_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_instance(request: Request, instance_id: int) -> None:
    """Remove an instance; its model's controller creates a fresh one if the replicas call for it."""
    ctx = context(request)

    async def delete(session: AsyncSession) -> None:
        await session.delete(await get_or_404(session, ModelInstanceRow, instance_id, "model instance"))

    what = f"deleting model instance {instance_id}"
    await run_transaction(ctx.session, delete, what=what, retry_stale=True)
    ctx.schedule_wanted.set()


@router.put("/{instance_id}/state", response_model=ModelInstancePublic)
async def report_state(
    request: Request,
    instance_id: int,
    body: ModelInstanceStateUpdate,
    principal: Principal = Depends(require_worker),
) -> ModelInstanceRow:
    """A worker reports the progress of an instance it runs."""
    ctx = context(request)
    if body.worker_id != principal.worker_id:
        raise Forbidden(
            f"a worker reports only for itself: worker_id must be {principal.worker_id}, got {body.worker_id}"
        )
    if body.state in (ModelInstanceState.PENDING, ModelInstanceState.ANALYZING, ModelInstanceState.SCHEDULED):
        raise BadRequest(f"workers cannot set state {body.state.value}; the scheduler owns it")
    logger.debug(
        "worker %d reports model instance %d %s: %s",
        body.worker_id,
        instance_id,
        body.state.value,
        body.state_message.partition("\n")[0],
    )

    async def apply(session: AsyncSession) -> ModelInstanceRow:
        return await _apply_report(session, instance_id, body)

    # A controller may change the row meanwhile: it is read again and re-checked, not a 409.
    row = await run_transaction(
        ctx.session, apply, what=f"recording the state of model instance {instance_id}", retry_stale=True
    )
    if body.state == ModelInstanceState.ERROR:
        logger.warning("model instance %s failed: %s", row.name, body.state_message.partition("\n")[0])
    return row


async def _apply_report(
    session: AsyncSession, instance_id: int, body: ModelInstanceStateUpdate
) -> ModelInstanceRow:
    row = await get_or_404(session, ModelInstanceRow, instance_id, "model instance")
    if row.worker_id != body.worker_id:
        raise Conflict(f"model instance {row.name} is no longer assigned to worker {body.worker_id}")
    if row.state == ModelInstanceState.UNREACHABLE.value and body.state == ModelInstanceState.RUNNING:
        return row  # the server's probe owns unreachable; it sets running again itself
    set_instance_state(row, body.state, body.state_message)
    for field in ("port", "pid", "resolved_path"):
        value = getattr(body, field)
        if value is not None or (body.state == ModelInstanceState.ERROR and field == "pid"):
            setattr(row, field, value)
    return row


@router.get("/{instance_id}/logs", dependencies=[Depends(require_admin)])
async def instance_logs(
    request: Request,
    instance_id: int,
    tail: int = Query(-1, ge=-1, le=1_000_000, description="last N lines; -1 for all"),
    follow: bool = Query(False, description="keep streaming new lines"),
) -> StreamingResponse:
    ctx = context(request)
    async with ctx.session() as session:
        row = await get_or_404(session, ModelInstanceRow, instance_id, "model instance")
        worker = await session.get(WorkerRow, row.worker_id) if row.worker_id else None
    if worker is None:
        raise BadRequest(f"model instance {row.name} is not placed on a worker yet, so it has no logs")
    url = f"http://{worker.ip}:{worker.port}/serve-logs/{instance_id}"
    upstream_request = ctx.http.build_request(
        "GET",
        url,
        params={"tail": tail, "follow": str(follow).lower()},
        headers={"Authorization": f"Bearer {ctx.worker_credential(worker.id)}"},
        timeout=httpx.Timeout(10.0, read=None),
    )
    try:
        upstream = await ctx.http.send(upstream_request, stream=True)
    except httpx.HTTPError as exc:
        reason = describe_error(exc, with_request=False)
        raise ServiceUnavailable(f"cannot reach worker {worker.name} at {url}: {reason}") from None
    if upstream.status_code != 200:
        body = (await upstream.aread()).decode(errors="replace")
        await upstream.aclose()
        raise ServiceUnavailable(f"worker {worker.name} answered {upstream.status_code}: {body[:500]}")
    return stream_back(upstream, media_type="text/plain; charset=utf-8")
