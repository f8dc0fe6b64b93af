"""Model files (Resources → Model Files): the copies of model files each worker holds, with their download
progress. Workers record and report them; administrators list, watch, remove (refused while a model's
instance uses them) and retry them. Deleting a model keeps its files, so that a redeploy is quick."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.common import PaginatedList
from gpustack.schemas.model_files import (
    ModelFileClaim,
    ModelFilePublic,
    ModelFileState,
    ModelFileStateUpdate,
)
from gpustack.schemas.models import ACTIVE_STATES, ModelInstanceState, ModelSpec
from gpustack.server.api.common import PageParams, QueryId, get_or_404, paginate
from gpustack.server.api.watch import watch_rows
from gpustack.server.auth import Principal, context, require_admin, require_worker
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelFileRow, ModelInstanceRow, ModelRow, WorkerRow
from gpustack.server.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceUnavailable
from gpustack.server.services import set_instance_state
from gpustack.sources.registry import SOURCE_FIELDS, source_of
from gpustack.utils.errors import describe_error

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v2/model-files", tags=["model-files"])


def cache_key(model: ModelRow | ModelSpec | ModelFileClaim) -> str | None:
    """The key a model's files are kept under on a worker; None for local paths or an unreadable row."""
    try:
        spec = (
            model if isinstance(model, ModelSpec) else ModelSpec.model_validate(model, from_attributes=True)
        )
        return source_of(spec.source).cache_key(spec)
    except (ValueError, ValidationError):
        return None


async def _users(session: AsyncSession, key: str) -> list[ModelRow]:
    models = (await session.execute(select(ModelRow).order_by(ModelRow.id))).scalars().all()
    return [model for model in models if cache_key(model) == key]


@router.get("", response_model=PaginatedList[ModelFilePublic], dependencies=[Depends(require_admin)])
async def list_files(
    request: Request,
    params: PageParams = Depends(),
    worker_id: QueryId = None,
    state: ModelFileState | None = None,
    watch: bool = Query(False, description="stream a snapshot then changes as newline-delimited JSON"),
) -> Response:
    statement = select(ModelFileRow).order_by(ModelFileRow.id)
    if worker_id is not None:
        statement = statement.where(ModelFileRow.worker_id == worker_id)
    if state is not None:
        statement = statement.where(ModelFileRow.state == state.value)
    if watch:
        return watch_rows(
            context(request),
            statement,
            ModelFilePublic,
            lambda f: (
                (worker_id is None or f["worker_id"] == worker_id)
                and (state is None or f["state"] == state.value)
            ),
        )
    async with context(request).session() as session:
        return await paginate(session, statement, params, ModelFilePublic)


@router.get("/{file_id}", response_model=ModelFilePublic, dependencies=[Depends(require_admin)])
async def get_file(request: Request, file_id: int) -> ModelFileRow:
    async with context(request).session() as session:
        return await get_or_404(session, ModelFileRow, file_id, "model file")


@router.post("", response_model=ModelFilePublic)
async def claim_file(
    request: Request, body: ModelFileClaim, principal: Principal = Depends(require_worker)
) -> ModelFileRow:
    """A worker records the files it fetches (or holds) for a model: the row for its (worker, source)."""
    ctx = context(request)
    key = cache_key(body)
    if key is None:
        raise BadRequest(f"source {body.source.value} keeps no files in the cache")

    worker_id = principal.worker_id
    assert worker_id is not None  # require_worker

    async def claim(session: AsyncSession) -> ModelFileRow:
        worker = await get_or_404(session, WorkerRow, worker_id, "worker")
        row = (
            await session.execute(
                select(ModelFileRow).where(ModelFileRow.worker_id == worker.id, ModelFileRow.cache_key == key)
            )
        ).scalar()
        if row is None:
            fields = body.model_dump(mode="json", include={"source", *SOURCE_FIELDS})
            row = ModelFileRow(
                worker_id=worker.id,
                worker_name=worker.name,
                cache_key=key,
                state=ModelFileState.DOWNLOADING.value,
                state_message="",
                downloaded_bytes=0,
                download_speed=0,
                download_progress=0.0,
                resolved_paths=[],
                **fields,
            )
            session.add(row)
        row.model_names = [model.name for model in await _users(session, key)]
        return row

    return await run_transaction(ctx.session, claim, what="recording model files", retry_stale=True)


@router.put("/{file_id}/state", response_model=ModelFilePublic)
async def report_file(
    request: Request, file_id: int, body: ModelFileStateUpdate, principal: Principal = Depends(require_worker)
) -> ModelFileRow:
    """A worker reports the download of files it holds."""
    ctx = context(request)

    async def report(session: AsyncSession) -> ModelFileRow:
        row = await get_or_404(session, ModelFileRow, file_id, "model file")
        if row.worker_id != principal.worker_id:
            raise Forbidden(f"model file {file_id} belongs to another worker")
        for field, value in body.model_dump().items():
            if field != "size" or value is not None:
                setattr(row, field, value)
        if body.state != ModelFileState.DOWNLOADING:
            row.download_speed = 0
            row.model_names = [model.name for model in await _users(session, row.cache_key)]
        return row

    row = await run_transaction(ctx.session, report, what=f"recording model file {file_id}", retry_stale=True)
    if body.state == ModelFileState.ERROR:
        logger.warning("model files %s on %s: %s", row.cache_key, row.worker_name, body.state_message)
    return row


async def _call_worker(ctx: ServerContext, worker: WorkerRow, method: str, path: str, body: Any) -> Any:
    url = f"http://{worker.ip}:{worker.port}{path}"
    try:
        response = await ctx.http.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {ctx.worker_credential(worker.id)}"},
            timeout=httpx.Timeout(60.0, connect=5.0),
        )
    except httpx.HTTPError as exc:
        raise ServiceUnavailable(
            f"cannot reach worker {worker.name} at {url} ({describe_error(exc, with_request=False)}); "
            "try again when it is back"
        ) from None
    if response.status_code >= 400:
        try:
            message = response.json().get("message", response.text)
        except ValueError:
            message = response.text
        if response.status_code == 409:
            raise Conflict(f"worker {worker.name}: {message}")
        answer = f"{response.status_code}: {str(message)[:500]}"
        raise ServiceUnavailable(f"worker {worker.name} answered {answer}")
    return response.json()


async def _instances_using(
    session: AsyncSession, row: ModelFileRow
) -> list[tuple[ModelInstanceRow, ModelRow]]:
    found = await session.execute(
        select(ModelInstanceRow, ModelRow)
        .join(ModelRow, ModelRow.id == ModelInstanceRow.model_id)
        .where(ModelInstanceRow.worker_id == row.worker_id)
    )
    return [(instance, model) for instance, model in found.all() if cache_key(model) == row.cache_key]


@router.delete("/{file_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_file(request: Request, file_id: int) -> None:
    """Remove the files from the worker's disk, unless an instance of a model uses them."""
    ctx = context(request)
    async with ctx.session() as session:
        row = await get_or_404(session, ModelFileRow, file_id, "model file")
        active = [
            (instance, model)
            for instance, model in await _instances_using(session, row)
            if ModelInstanceState(instance.state) in ACTIVE_STATES
        ]
        if active:
            names = ", ".join(sorted({model.name for _, model in active}))
            raise Conflict(
                f"model file {file_id} is in use by model {names} on worker {row.worker_name}; delete the "
                "model (or scale it to 0 replicas) first"
            )
        worker = await session.get(WorkerRow, row.worker_id)
        key = row.cache_key
    if worker is not None:
        await _call_worker(ctx, worker, "DELETE", "/model-files", {"cache_key": key})

    async def delete(session: AsyncSession) -> None:
        found = await session.get(ModelFileRow, file_id)
        if found is not None:
            await session.delete(found)

    await run_transaction(ctx.session, delete, what=f"deleting model file {file_id}", retry_stale=True)
    logger.info("model files %s removed from worker %s", key, worker.name if worker else "?")


@router.post("/{file_id}/retry", response_model=ModelFilePublic, dependencies=[Depends(require_admin)])
async def retry_file(request: Request, file_id: int) -> ModelFileRow:
    """Download files in error again: the instances waiting for them restart, and the worker fetches them
    (resuming what it has, or from the beginning after a checksum error)."""
    ctx = context(request)
    async with ctx.session() as session:
        row = await get_or_404(session, ModelFileRow, file_id, "model file")
        if row.state != ModelFileState.ERROR.value:
            raise Conflict(f"model file {file_id} is {row.state}; only files in error can be retried")
        using = await _instances_using(session, row)
        users = await _users(session, row.cache_key)
        worker = await session.get(WorkerRow, row.worker_id)
    if worker is None:
        raise NotFound(f"the worker of model file {file_id} no longer exists")
    failed = [instance.id for instance, _ in using if instance.state == ModelInstanceState.ERROR.value]
    if not using:
        if not users:
            raise Conflict(
                f"no model uses model file {file_id} any more; deploy one from this source to download it"
            )
        spec = ModelSpec.model_validate(users[0], from_attributes=True)
        await _call_worker(
            ctx,
            worker,
            "POST",
            "/model-files/download",
            {"model_id": users[0].id, "spec": spec.model_dump(mode="json")},
        )

    async def retry(session: AsyncSession) -> ModelFileRow:
        found = await get_or_404(session, ModelFileRow, file_id, "model file")
        found.state = ModelFileState.DOWNLOADING.value
        found.state_message = "retrying the download"
        found.download_speed = 0
        for instance_id in failed:
            instance = await session.get(ModelInstanceRow, instance_id)
            if instance is not None and instance.state == ModelInstanceState.ERROR.value:
                message = "retrying the download of its files"
                set_instance_state(instance, ModelInstanceState.SCHEDULED, message)
        return found

    return await run_transaction(ctx.session, retry, what=f"retrying model file {file_id}", retry_stale=True)
