"""Logging in and out, and changing one's own password."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import select

from gpustack.schemas.users import LoginRequest, PasswordChange, UserPublic
from gpustack.server import security
from gpustack.server.auth import Principal, context, require_user_allow_password_change, session_token
from gpustack.server.db.tables import UserRow
from gpustack.server.errors import BadRequest, TooManyRequests, Unauthorized
from gpustack.server.login_throttle import LoginThrottle
from gpustack.server.sessions import create_session, end_session, end_user_sessions

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/auth", tags=["auth"])

INITIAL_PASSWORD_FILE = "initial_admin_password"


def _throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle
    return throttle


def _client_address(request: Request) -> str:
    # Behind a proxy named in --trusted-proxies, uvicorn has already put the real client here.
    return request.client.host if request.client else "unknown"


def _set_session_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        security.SESSION_COOKIE,
        token,
        max_age=security.SESSION_TTL_SECONDS,
        httponly=True,
        samesite="lax",
        # https directly (--ssl-certfile), or as a trusted proxy's X-Forwarded-Proto says.
        secure=request.url.scheme == "https",
    )


@router.post("/login", response_model=UserPublic, responses={429: {"description": "too many failures"}})
async def login(request: Request, response: Response, body: LoginRequest) -> UserRow:
    throttle, address = _throttle(request), _client_address(request)
    wait = throttle.retry_after(body.username, address)
    if wait:
        raise TooManyRequests(f"too many failed logins; try again in {wait} s", wait)
    ctx = context(request)
    async with ctx.session() as session:
        user = (await session.execute(select(UserRow).where(UserRow.username == body.username))).scalar()
    # An unknown user costs a hash check too, so that timing does not tell which usernames exist.
    hashed = user.hashed_password if user is not None else await security.dummy_hash()
    try:
        valid = await security.verify_password(hashed, body.password)
    except security.HashingBusy:
        raise TooManyRequests("too many logins at once; try again in a second", 1) from None
    if not valid or user is None:
        throttle.failed(body.username, address)
        logger.info("failed login for %r from %s", body.username[:64], address)
        raise Unauthorized("wrong username or password")
    throttle.succeeded(body.username)
    async with ctx.session() as session:
        token = await create_session(session, user.id)
        await session.commit()
    _set_session_cookie(request, response, token)
    return user


@router.post("/logout", status_code=204)
async def logout(request: Request, response: Response) -> Response:
    """End this browser session (the cookie stops working everywhere it was copied to)."""
    token = session_token(request)
    if token:
        async with context(request).session() as session:
            await end_session(session, token)
            await session.commit()
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
    """Change one's own password; every other session of the user ends, this one gets a fresh one."""
    ctx = context(request)
    async with ctx.session() as session:
        user = await session.get(UserRow, principal.user_id)
        if user is None:
            raise Unauthorized("your user no longer exists")
        try:
            valid = await security.verify_password(user.hashed_password, body.current_password)
        except security.HashingBusy:
            raise TooManyRequests("too many password checks at once; try again in a second", 1) from None
        if not valid:
            raise BadRequest("current_password is wrong")
        if body.new_password == body.current_password:
            raise BadRequest("new_password must differ from the current password")
        user.hashed_password = await security.hash_password(body.new_password)
        user.require_password_change = False
        await end_user_sessions(session, user.id)
        token = await create_session(session, user.id)
        await session.commit()
    _set_session_cookie(request, response, token)
    if user.is_admin:
        _remove_initial_password(Path(ctx.config.data_dir) / INITIAL_PASSWORD_FILE)
    return user


def _remove_initial_password(path: Path) -> None:
    """The generated first password is useless once changed; it should not sit on disk."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)
        return
    logger.info("removed %s: the administrator chose a password", path)
