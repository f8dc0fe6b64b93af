"""Users: administrators manage them; everyone can read themselves."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.common import PaginatedList
from gpustack.schemas.users import UserCreate, UserPublic, UserUpdate
from gpustack.server import security
from gpustack.server.api.common import PageParams, get_or_404, paginate
from gpustack.server.auth import (
    Principal,
    context,
    credential_cache,
    require_admin,
    require_user_allow_password_change,
)
from gpustack.server.db.tables import UserRow
from gpustack.server.errors import BadRequest, Conflict
from gpustack.server.sessions import end_user_sessions

router = APIRouter(prefix="/v2/users", tags=["users"])


@router.get("/me", response_model=UserPublic)
async def me(request: Request, principal: Principal = Depends(require_user_allow_password_change)) -> UserRow:
    async with context(request).session() as session:
        return await get_or_404(session, UserRow, principal.user_id or 0, "user")


@router.get("", response_model=PaginatedList[UserPublic], dependencies=[Depends(require_admin)])
async def list_users(
    request: Request,
    params: PageParams = Depends(),
    search: str | None = Query(None, description="part of the username or full name"),
    is_admin: bool | None = None,
) -> Response:
    statement = select(UserRow).order_by(UserRow.id)
    if search:
        pattern = f"%{search}%"
        statement = statement.where(or_(UserRow.username.ilike(pattern), UserRow.full_name.ilike(pattern)))
    if is_admin is not None:
        statement = statement.where(UserRow.is_admin == is_admin)
    async with context(request).session() as session:
        return await paginate(session, statement, params, UserPublic)


@router.post("", response_model=UserPublic, status_code=201, dependencies=[Depends(require_admin)])
async def create_user(request: Request, body: UserCreate) -> UserRow:
    user = UserRow(
        username=body.username,
        full_name=body.full_name,
        hashed_password=await security.hash_password(body.password),
        is_admin=body.is_admin,
        require_password_change=body.require_password_change,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
    )
    async with context(request).session() as session:
        session.add(user)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"a user named {body.username!r} already exists") from None
    return user


@router.get("/{user_id}", response_model=UserPublic, dependencies=[Depends(require_admin)])
async def get_user(request: Request, user_id: int) -> UserRow:
    async with context(request).session() as session:
        return await get_or_404(session, UserRow, user_id, "user")


async def _count_admins(session: AsyncSession, excluding: int) -> int:
    statement = select(func.count()).where(UserRow.is_admin.is_(True), UserRow.id != excluding)
    return int((await session.execute(statement)).scalar_one())


@router.put("/{user_id}", response_model=UserPublic)
async def update_user(
    request: Request, user_id: int, body: UserUpdate, principal: Principal = Depends(require_admin)
) -> UserRow:
    ctx = context(request)
    async with ctx.session() as session:
        user = await get_or_404(session, UserRow, user_id, "user")
        if body.is_admin is False and user.is_admin and await _count_admins(session, user.id) == 0:
            raise BadRequest("cannot remove the administrator role from the last administrator")
        for field in ("full_name", "is_admin", "require_password_change"):
            value = getattr(body, field)
            if value is not None:
                setattr(user, field, value)
        for field in ("rpm_limit", "tpm_limit"):  # null removes a limit
            if field in body.model_fields_set:
                setattr(user, field, getattr(body, field))
        if body.password is not None:
            user.hashed_password = await security.hash_password(body.password)
            await end_user_sessions(session, user.id)  # a new password ends the old logins
        await session.commit()
    credential_cache(request).clear()
    return user


@router.delete("/{user_id}", status_code=204)
async def delete_user(request: Request, user_id: int, principal: Principal = Depends(require_admin)) -> None:
    if user_id == principal.user_id:
        raise BadRequest("you cannot delete yourself")
    async with context(request).session() as session:
        user = await get_or_404(session, UserRow, user_id, "user")
        if user.is_admin and await _count_admins(session, user.id) == 0:
            raise BadRequest("cannot delete the last administrator")
        await end_user_sessions(session, user.id)
        await session.delete(user)
        await session.commit()
    credential_cache(request).clear()
