"""GET /v2/backends: each worker's backends, as it reports them in its status: installed versions (pinned
executables in bin-dir, managed environments), the pinned default, and what runs a model naming none."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import select

from gpustack.schemas.backends import WorkerBackends
from gpustack.schemas.common import PaginatedList, Pagination
from gpustack.schemas.workers import WorkerStatus
from gpustack.server.auth import context, require_admin
from gpustack.server.db.tables import WorkerRow

router = APIRouter(prefix="/v2/backends", tags=["backends"])


@router.get("", response_model=PaginatedList[WorkerBackends], dependencies=[Depends(require_admin)])
async def list_backends(
    request: Request,
    worker: str | None = Query(None, description="a worker's name"),
    backend: str | None = Query(None, description="a backend's name, e.g. vllm"),
) -> PaginatedList[WorkerBackends]:
    statement = select(WorkerRow).order_by(WorkerRow.id)
    if worker:
        statement = statement.where(WorkerRow.name == worker)
    async with context(request).session() as session:
        rows = (await session.execute(statement)).scalars().all()
    items = [
        WorkerBackends(worker_id=row.id, worker_name=row.name, **entry.model_dump())
        for row in rows
        for entry in WorkerStatus.model_validate(row.status or {}).backends
        if backend is None or entry.backend == backend
    ]
    pagination = Pagination(page=1, per_page=max(len(items), 1), total=len(items), total_page=1)
    return PaginatedList[WorkerBackends](items=items, pagination=pagination)
