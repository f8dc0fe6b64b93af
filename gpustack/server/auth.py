"""Who is calling: a user (browser session or API key), a worker (its own credential), or a machine
joining with the cluster token, which can do nothing but register."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import Depends, Request
from sqlalchemy import select

from gpustack.server import security
from gpustack.server.context import ServerContext
from gpustack.server.db.tables import ApiKeyRow, UserRow, UserSessionRow, WorkerRow
from gpustack.server.errors import Forbidden, Unauthorized
from gpustack.server.gateway.quotas import NO_LIMITS, Limits
from gpustack.utils.tokens import tokens_equal

_CACHE_TTL_SECONDS = 30.0
# A key that does not exist is remembered as such for this long, so that a flood of wrong keys is answered
# from memory; a key created later has another value, so nothing valid is ever refused by it.
_UNKNOWN_TTL_SECONDS = 10.0
_MAX_ENTRIES = 10_000


class CredentialKind(enum.Enum):
    SESSION = "session"  # a browser login (cookie, or the same token as a bearer)
    API_KEY = "api_key"
    WORKER = "worker"  # a registered worker's own credential
    CLUSTER_TOKEN = "cluster_token"  # only registers workers


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `user_id` is set for users, `worker_id` for a worker's credential."""

    kind: CredentialKind
    username: str
    user_id: int | None = None
    is_admin: bool = False
    require_password_change: bool = False
    worker_id: int | None = None
    # For the gateway: the API key used (None: a browser session), its and its user's limits per minute,
    # and the models the key may use (None: any).
    api_key_id: int | None = None
    key_limits: Limits = NO_LIMITS
    user_limits: Limits = NO_LIMITS
    allowed_models: frozenset[str] | None = None

    @property
    def is_worker(self) -> bool:
        return self.kind is CredentialKind.WORKER

    @property
    def is_user(self) -> bool:
        return self.kind in (CredentialKind.SESSION, CredentialKind.API_KEY)


REGISTRAR = Principal(kind=CredentialKind.CLUSTER_TOKEN, username="cluster-token")


class CredentialCache:
    """Recently verified API keys and worker credentials, so the gateway and heartbeats do not hit the
    database on every request. Entries live at most 30 s, and the whole cache is dropped whenever a key,
    user or worker changes. Concurrent misses for one credential share a single lookup."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, Principal, datetime | None]] = {}
        self._unknown: dict[str, float] = {}  # credential -> when it was found not to exist
        self._lookups: dict[str, asyncio.Future[Principal]] = {}

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

    def put(self, key: str, principal: Principal, expires_at: datetime | None = None) -> None:
        if len(self._entries) > _MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), principal, expires_at)

    def known_unknown(self, key: str) -> bool:
        found = self._unknown.get(key)
        if found is None:
            return False
        if time.monotonic() - found > _UNKNOWN_TTL_SECONDS:
            del self._unknown[key]
            return False
        return True

    def put_unknown(self, key: str) -> None:
        if len(self._unknown) > _MAX_ENTRIES:
            self._unknown.clear()
        self._unknown[key] = time.monotonic()

    async def single_lookup(self, key: str, lookup: Callable[[], Awaitable[Principal]]) -> Principal:
        """`lookup()`'s answer; callers asking for the same key meanwhile wait for that one lookup."""
        pending = self._lookups.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Principal] = asyncio.get_running_loop().create_future()
        self._lookups[key] = future
        try:
            principal = await lookup()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            self._lookups.pop(key, None)
        future.set_result(principal)
        return principal

    def clear(self) -> None:
        self._entries.clear()
        self._unknown.clear()


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def credential_cache(request: Request) -> CredentialCache:
    cache: CredentialCache = request.app.state.credential_cache
    return cache


async def _from_api_key(ctx: ServerContext, cache: CredentialCache, value: str) -> Principal:
    cached = cache.get(value)
    if cached is not None:
        return cached
    parts = security.split_api_key(value)
    if parts is None:
        raise Unauthorized("invalid API key: expected gpustack_<16 hex>_<32 hex>")
    if cache.known_unknown(value):
        raise Unauthorized("invalid API key")
    return await cache.single_lookup(value, lambda: _look_up_api_key(ctx, cache, value, parts))


async def _look_up_api_key(
    ctx: ServerContext, cache: CredentialCache, value: str, parts: tuple[str, str]
) -> Principal:
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
        cache.put_unknown(value)
        raise Unauthorized("invalid API key")
    key, user = row
    if key.expires_at is not None and key.expires_at <= datetime.now(timezone.utc):
        raise Unauthorized(f"API key {key.name!r} expired at {key.expires_at.isoformat()}; create a new one")
    # A key is a credential of its own: a password change that is due applies to the browser only.
    principal = Principal(
        CredentialKind.API_KEY,
        user.username,
        user.id,
        user.is_admin,
        api_key_id=key.id,
        key_limits=Limits(key.rpm_limit, key.tpm_limit),
        user_limits=Limits(user.rpm_limit, user.tpm_limit),
        allowed_models=frozenset(key.allowed_models) if key.allowed_models is not None else None,
    )
    cache.put(value, principal, key.expires_at)
    return principal


async def _from_worker_credential(ctx: ServerContext, cache: CredentialCache, value: str) -> Principal:
    cached = cache.get(value)
    if cached is not None:
        return cached
    worker_id = security.worker_id_of(value)
    if worker_id is None or not tokens_equal(
        value, security.worker_credential(ctx.session_secret, worker_id)
    ):
        raise Unauthorized("invalid worker credential; the worker registers again with the cluster token")
    async with ctx.session() as session:
        worker = await session.get(WorkerRow, worker_id)
    if worker is None:
        raise Unauthorized(f"worker {worker_id} was removed; it registers again with the cluster token")
    principal = Principal(CredentialKind.WORKER, f"worker:{worker.name}", worker_id=worker_id)
    cache.put(value, principal)
    return principal


async def _from_session(ctx: ServerContext, token: str) -> Principal:
    async with ctx.session() as session:
        row = (
            await session.execute(
                select(UserRow)
                .join(UserSessionRow, UserSessionRow.user_id == UserRow.id)
                .where(
                    UserSessionRow.token_hash == security.hash_secret(token),
                    UserSessionRow.expires_at > datetime.now(timezone.utc),
                )
            )
        ).scalar()
    if row is None:
        raise Unauthorized("session expired or invalid; log in again")
    return Principal(
        CredentialKind.SESSION,
        row.username,
        row.id,
        row.is_admin,
        row.require_password_change,
        user_limits=Limits(row.rpm_limit, row.tpm_limit),
    )


def session_token(request: Request) -> str | None:
    """The browser session token this request carries (cookie, or a bearer that is none of the others)."""
    header = request.headers.get("authorization", "")
    if header:
        value = header.partition(" ")[2].strip()
        if value and not value.startswith(
            (security.API_KEY_PREFIX + "_", security.WORKER_CREDENTIAL_PREFIX + "_")
        ):
            return value
        return None
    return request.cookies.get(security.SESSION_COOKIE) or None


async def authenticate(request: Request) -> Principal:
    """The caller, or 401. Credentials: `Authorization: Bearer <API key, worker credential, cluster token
    or session token>`, or the session cookie. A principal already found for this request is reused."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    ctx = context(request)
    header = request.headers.get("authorization", "")
    principal: Principal
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("use 'Authorization: Bearer <API key>'")
        if value.startswith(security.API_KEY_PREFIX + "_"):
            principal = await _from_api_key(ctx, credential_cache(request), value)
        elif value.startswith(security.WORKER_CREDENTIAL_PREFIX + "_"):
            principal = await _from_worker_credential(ctx, credential_cache(request), value)
        elif tokens_equal(value, ctx.cluster_token):
            principal = REGISTRAR
        else:
            try:
                principal = await _from_session(ctx, value)
            except Unauthorized:
                raise Unauthorized(
                    "invalid bearer token: not an API key, a session, a worker credential "
                    "or the cluster token"
                ) from None
    elif cookie := request.cookies.get(security.SESSION_COOKIE):
        principal = await _from_session(ctx, cookie)
    else:
        raise Unauthorized("authentication required: log in, or send 'Authorization: Bearer <API key>'")
    request.state.principal = principal
    return principal


def _refuse_non_users(principal: Principal) -> None:
    if principal.kind is CredentialKind.CLUSTER_TOKEN:
        raise Forbidden("the cluster token only registers workers; use an API key")
    if principal.is_worker:
        raise Forbidden("a worker credential reaches only the worker routes; use an API key")


def _check_password_changed(principal: Principal) -> None:
    if principal.kind is CredentialKind.SESSION and principal.require_password_change:
        raise Forbidden(
            "you must change your password before using the API: "
            "POST /auth/update-password with current_password and new_password"
        )


async def require_user(principal: Principal = Depends(authenticate)) -> Principal:
    """Any user (not a worker) who has set their own password."""
    _refuse_non_users(principal)
    _check_password_changed(principal)
    return principal


async def require_user_allow_password_change(principal: Principal = Depends(authenticate)) -> Principal:
    """Any user, even one who still has to change the initial password (for /auth and /users/me)."""
    _refuse_non_users(principal)
    return principal


async def require_admin(principal: Principal = Depends(require_user)) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this needs an administrator")
    return principal


async def require_admin_or_worker(principal: Principal = Depends(authenticate)) -> Principal:
    """An administrator, or a worker (whose route then limits it to what it runs)."""
    if principal.is_worker:
        return principal
    return await require_admin(await require_user(principal))


async def require_worker(principal: Principal = Depends(authenticate)) -> Principal:
    if not principal.is_worker:
        if principal.kind is CredentialKind.CLUSTER_TOKEN:
            raise Forbidden("the cluster token only registers; send the credential registration returned")
        raise Forbidden("this route is for workers: send the worker's own credential")
    return principal


async def require_registrar(principal: Principal = Depends(authenticate)) -> Principal:
    if principal.kind is not CredentialKind.CLUSTER_TOKEN:
        raise Forbidden("registering a worker needs the cluster token (<data-dir>/token on the server)")
    return principal
