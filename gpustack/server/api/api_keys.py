"""API keys: each user manages their own; the secret is shown once and stored hashed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import select

from gpustack.schemas.common import PaginatedList
from gpustack.schemas.users import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, ApiKeyUpdate
from gpustack.server import security
from gpustack.server.api.common import PageParams, get_or_404, paginate
from gpustack.server.auth import Principal, context, credential_cache, require_user
from gpustack.server.db.tables import ApiKeyRow
from gpustack.server.errors import NotFound

router = APIRouter(prefix="/v2/api-keys", tags=["api-keys"])


@router.get("", response_model=PaginatedList[ApiKeyPublic])
async def list_keys(
    request: Request,
    params: PageParams = Depends(),
    search: str | None = Query(None, description="part of the key's name"),
    principal: Principal = Depends(require_user),
) -> Response:
    statement = select(ApiKeyRow).where(ApiKeyRow.user_id == principal.user_id).order_by(ApiKeyRow.id)
    if search:
        statement = statement.where(ApiKeyRow.name.ilike(f"%{search}%"))
    async with context(request).session() as session:
        return await paginate(session, statement, params, ApiKeyPublic)


@router.post("", response_model=ApiKeyCreated, status_code=201)
async def create_key(
    request: Request, body: ApiKeyCreate, principal: Principal = Depends(require_user)
) -> dict:
    generated = security.generate_api_key()
    expires_at = datetime.now(timezone.utc) + timedelta(seconds=body.expires_in) if body.expires_in else None
    row = ApiKeyRow(
        name=body.name,
        description=body.description,
        access_key=generated.access_key,
        hashed_secret_key=security.hash_secret(generated.secret_key),
        user_id=principal.user_id,
        expires_at=expires_at,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
        allowed_models=body.allowed_models,
    )
    async with context(request).session() as session:
        session.add(row)
        await session.commit()
    return {**ApiKeyPublic.model_validate(row).model_dump(), "value": generated.value}


@router.patch("/{key_id}", response_model=ApiKeyPublic)
async def update_key(
    request: Request, key_id: int, body: ApiKeyUpdate, principal: Principal = Depends(require_user)
) -> ApiKeyRow:
    """Change a key's limits, allowed models or description (its owner, or an administrator)."""
    async with context(request).session() as session:
        row = await get_or_404(session, ApiKeyRow, key_id, "API key")
        if row.user_id != principal.user_id and not principal.is_admin:
            raise NotFound(f"API key {key_id} not found")
        if body.description is not None:
            row.description = body.description
        for field in ("rpm_limit", "tpm_limit", "allowed_models"):  # null removes it
            if field in body.model_fields_set:
                setattr(row, field, getattr(body, field))
        await session.commit()
    credential_cache(request).clear()  # the gateway sees the change at once
    return row


@router.delete("/{key_id}", status_code=204)
async def delete_key(request: Request, key_id: int, principal: Principal = Depends(require_user)) -> None:
    async with context(request).session() as session:
        row = await get_or_404(session, ApiKeyRow, key_id, "API key")
        if row.user_id != principal.user_id and not principal.is_admin:
            raise NotFound(f"API key {key_id} not found")
        await session.delete(row)
        await session.commit()
    credential_cache(request).clear()
