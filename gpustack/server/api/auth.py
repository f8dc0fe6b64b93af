"""Logging in and out, and changing one's own password."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from gpustack.schemas.users import LoginRequest, PasswordChange, UserPublic
from gpustack.server import security
from gpustack.server.auth import Principal, context, require_user_allow_password_change
from gpustack.server.db.tables import UserRow
from gpustack.server.errors import BadRequest, Unauthorized

router = APIRouter(prefix="/auth", tags=["auth"])


def _set_session_cookie(request: Request, response: Response, user: UserRow) -> None:
    token = security.issue_session(context(request).session_secret, user.id, user.hashed_password)
    response.set_cookie(
        security.SESSION_COOKIE,
        token,
        max_age=security.SESSION_TTL_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


@router.post("/login", response_model=UserPublic)
async def login(request: Request, response: Response, body: LoginRequest) -> UserRow:
    async with context(request).session() as session:
        user = (await session.execute(select(UserRow).where(UserRow.username == body.username))).scalar()
    # An unknown user costs a hash check too, so that timing does not tell which usernames exist.
    hashed = user.hashed_password if user is not None else await security.dummy_hash()
    if not await security.verify_password(hashed, body.password) or user is None:
        raise Unauthorized("wrong username or password")
    _set_session_cookie(request, response, user)
    return user


@router.post("/logout", status_code=204)
async def logout(response: Response) -> Response:
    response.delete_cookie(security.SESSION_COOKIE)
    response.status_code = 204
    return response


@router.post("/update-password", response_model=UserPublic)
async def update_password(
    request: Request,
    response: Response,
    body: PasswordChange,
    principal: Principal = Depends(require_user_allow_password_change),
) -> UserRow:
    async with context(request).session() as session:
        user = await session.get(UserRow, principal.user_id)
        if user is None:
            raise Unauthorized("your user no longer exists")
        if not await security.verify_password(user.hashed_password, body.current_password):
            raise BadRequest("current_password is wrong")
        if body.new_password == body.current_password:
            raise BadRequest("new_password must differ from the current password")
        user.hashed_password = await security.hash_password(body.new_password)
        user.require_password_change = False
        await session.commit()
    _set_session_cookie(request, response, user)
    return user
