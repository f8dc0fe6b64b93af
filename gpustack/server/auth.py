"""Who is calling: a user by session cookie or API key, or a worker by the cluster token."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import Depends, Request
from sqlalchemy import select

from gpustack.server import security
from gpustack.server.context import ServerContext
from gpustack.server.db.tables import ApiKeyRow, UserRow
from gpustack.server.errors import Forbidden, Unauthorized
from gpustack.utils.tokens import tokens_equal

_CACHE_TTL_SECONDS = 30.0


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `user_id` is None for a worker using the cluster token."""

    user_id: int | None
    username: str
    is_admin: bool
    require_password_change: bool = False
    is_worker: bool = False


WORKER = Principal(user_id=None, username="worker", is_admin=False, is_worker=True)


class ApiKeyCache:
    """Recently verified API keys, so the gateway does not hit the database on every request.

    Entries live at most a few seconds and the whole cache is dropped whenever a key or user changes.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal, datetime | None]] = {}

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        cached_at, principal, expires_at = entry
        now = time.monotonic()
        if now - cached_at > _CACHE_TTL_SECONDS or (expires_at and expires_at <= datetime.now(timezone.utc)):
            self._entries.pop(key, None)
            return None
        return principal

    def put(self, key: str, principal: Principal, expires_at: datetime | None) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), principal, expires_at)

    def clear(self) -> None:
        self._entries.clear()


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def _principal_of(user: UserRow) -> Principal:
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=user.is_admin,
        require_password_change=user.require_password_change,
    )


async def _from_api_key(ctx: ServerContext, cache: ApiKeyCache, value: str) -> Principal:
    cached = cache.get(value)
    if cached is not None:
        return cached
    parts = security.split_api_key(value)
    if parts is None:
        raise Unauthorized("invalid API key: expected gpustack_<16 hex>_<32 hex>")
    access_key, secret = parts
    async with ctx.session() as session:
        row = (
            await session.execute(
                select(ApiKeyRow, UserRow)
                .join(UserRow, UserRow.id == ApiKeyRow.user_id)
                .where(ApiKeyRow.access_key == access_key)
            )
        ).first()
    if row is None or not security.secret_matches(row[0].hashed_secret_key, secret):
        raise Unauthorized("invalid API key")
    key, user = row
    if key.expires_at is not None and key.expires_at <= datetime.now(timezone.utc):
        raise Unauthorized(f"API key {key.name!r} expired at {key.expires_at.isoformat()}; create a new one")
    principal = _principal_of(user)
    cache.put(value, principal, key.expires_at)
    return principal


async def _from_session(ctx: ServerContext, token: str) -> Principal:
    claims = security.read_session(ctx.session_secret, token)
    if claims is None:
        raise Unauthorized("session expired or invalid; log in again")
    user_id, stamp = claims
    async with ctx.session() as session:
        user = await session.get(UserRow, user_id)
    if user is None or security.password_stamp(user.hashed_password) != stamp:
        raise Unauthorized("session expired or invalid; log in again")
    return _principal_of(user)


async def authenticate(request: Request) -> Principal:
    """The caller, or 401. Credentials: `Authorization: Bearer <API key or cluster token>`, or the cookie."""
    ctx = context(request)
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("use 'Authorization: Bearer <API key>'")
        if value.startswith(security.API_KEY_PREFIX + "_"):
            return await _from_api_key(ctx, request.app.state.api_key_cache, value)
        if tokens_equal(value, ctx.cluster_token):
            return WORKER
        return await _from_session(ctx, value)
    cookie = request.cookies.get(security.SESSION_COOKIE)
    if cookie:
        return await _from_session(ctx, cookie)
    raise Unauthorized("authentication required: log in, or send 'Authorization: Bearer <API key>'")


def _check_password_changed(principal: Principal) -> None:
    if principal.require_password_change:
        raise Forbidden(
            "you must change your password before using the API: "
            "POST /auth/update-password with current_password and new_password"
        )


async def require_user(principal: Principal = Depends(authenticate)) -> Principal:
    """Any user (not a worker) who has set their own password."""
    if principal.is_worker:
        raise Forbidden("the cluster token is for workers; use an API key")
    _check_password_changed(principal)
    return principal


async def require_user_allow_password_change(principal: Principal = Depends(authenticate)) -> Principal:
    """Any user, even one who still has to change the initial password (for /auth and /users/me)."""
    if principal.is_worker:
        raise Forbidden("the cluster token is for workers; use an API key")
    return principal


async def require_admin(principal: Principal = Depends(require_user)) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this needs an administrator")
    return principal


async def require_admin_or_worker(principal: Principal = Depends(authenticate)) -> Principal:
    if principal.is_worker:
        return principal
    _check_password_changed(principal)
    if not principal.is_admin:
        raise Forbidden("this needs an administrator")
    return principal


async def require_worker(principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.is_worker:
        raise Forbidden("this route is for workers: send the cluster token")
    return principal
