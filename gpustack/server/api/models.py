"""Models: what users deploy. Instances follow from a model's replicas (see controllers/models.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.common import PaginatedList
from gpustack.schemas.models import ModelCreate, ModelPublic, ModelSpec, ModelUpdate, check_source_fields
from gpustack.server.api.common import PageParams, get_or_404, paginate
from gpustack.server.api.watch import watch_rows
from gpustack.server.auth import Principal, context, require_admin, require_admin_or_worker
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, ModelRow
from gpustack.server.errors import BadRequest, Conflict, NotFound

router = APIRouter(prefix="/v2/models", tags=["models"])


@router.get("", response_model=PaginatedList[ModelPublic], dependencies=[Depends(require_admin)])
async def list_models(
    request: Request,
    params: PageParams = Depends(),
    name: str | None = None,
    backend: str | None = None,
    search: str | None = Query(None, description="part of the name"),
    watch: bool = Query(False, description="stream a snapshot then changes as newline-delimited JSON"),
) -> Response:
    statement = select(ModelRow).order_by(ModelRow.id)
    if name:
        statement = statement.where(ModelRow.name == name)
    if backend:
        statement = statement.where(ModelRow.backend == backend)
    if search:
        pattern = f"%{search}%"
        statement = statement.where(or_(ModelRow.name.ilike(pattern), ModelRow.description.ilike(pattern)))
    if watch:
        needle = (search or "").lower()
        return watch_rows(
            context(request),
            statement,
            ModelPublic,
            lambda m: (
                (not name or m["name"] == name)
                and (not backend or m["backend"] == backend)
                and (needle in m["name"].lower() or needle in m["description"].lower())
            ),
        )
    async with context(request).session() as session:
        return await paginate(session, statement, params, ModelPublic)


@router.post("", response_model=ModelPublic, status_code=201, dependencies=[Depends(require_admin)])
async def create_model(request: Request, body: ModelCreate) -> ModelRow:
    ctx = context(request)

    async def create(session: AsyncSession) -> ModelRow:
        row = ModelRow(**body.model_dump(mode="json"), ready_replicas=0)
        session.add(row)
        return row

    try:
        row = await run_transaction(ctx.session, create, what=f"creating model {body.name!r}")
    except IntegrityError:
        raise Conflict(f"a model named {body.name!r} already exists") from None
    ctx.schedule_wanted.set()
    return row


@router.get("/{model_id}", response_model=ModelPublic)
async def get_model(
    request: Request, model_id: int, principal: Principal = Depends(require_admin_or_worker)
) -> ModelRow:
    """A worker reads only models it runs an instance of, or part of one (a Ray node of vLLM across
    workers needs the backend version and files too); their `env` may hold secrets."""
    async with context(request).session() as session:
        row = await get_or_404(session, ModelRow, model_id, "model")
        if principal.is_worker:
            instances = await session.execute(
                select(ModelInstanceRow.worker_id, ModelInstanceRow.subordinate_workers).where(
                    ModelInstanceRow.model_id == model_id
                )
            )
            me = principal.worker_id
            if not any(
                worker_id == me or any(part.get("worker_id") == me for part in parts or [])
                for worker_id, parts in instances
            ):
                raise NotFound(f"model {model_id} not found")
        return row


@router.put("/{model_id}", response_model=ModelPublic, dependencies=[Depends(require_admin)])
async def update_model(request: Request, model_id: int, body: ModelUpdate) -> ModelRow:
    """Change a model. Running instances keep their settings until recreated (delete the instance)."""
    ctx = context(request)
    changes = body.model_dump(mode="json", exclude_unset=True)

    async def update(session: AsyncSession) -> ModelRow:
        row = await get_or_404(session, ModelRow, model_id, "model")
        merged = {**ModelPublic.model_validate(row).model_dump(mode="json"), **changes}
        try:
            check_source_fields(ModelSpec.model_validate(merged))
        except (ValueError, ValidationError) as exc:
            raise BadRequest(str(exc)) from None
        for field, value in changes.items():
            setattr(row, field, value)
        return row

    row = await run_transaction(ctx.session, update, what=f"updating model {model_id}")
    ctx.schedule_wanted.set()
    return row


@router.delete("/{model_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_model(request: Request, model_id: int) -> None:
    ctx = context(request)

    async def delete(session: AsyncSession) -> None:
        row = await get_or_404(session, ModelRow, model_id, "model")
        instances = await session.execute(
            select(ModelInstanceRow).where(ModelInstanceRow.model_id == model_id)
        )
        for instance in instances.scalars():
            await session.delete(instance)
        await session.delete(row)

    # Workers report on the instances while they go: a changed one is read again, not a 409 to retry by hand.
    await run_transaction(ctx.session, delete, what=f"deleting model {model_id}", retry_stale=True)
    ctx.schedule_wanted.set()
