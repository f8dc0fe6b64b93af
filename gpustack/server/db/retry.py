"""Units of work that outlast a busy database: run again, whole, when SQLite is locked or PostgreSQL or
MySQL abort a transaction for a conflict, instead of failing the request or the controller step."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from gpustack.server.errors import ServiceUnavailable, error_response

logger = logging.getLogger(__name__)

T = TypeVar("T")

# SQLite waits busy_timeout inside each statement already; these attempts cover a lock held past it (a
# writer stalled on a starved event loop) and the conflicts other databases resolve by aborting one side.
ATTEMPTS = 5
FIRST_DELAY_SECONDS = 0.05
MAX_DELAY_SECONDS = 2.0
# No attempt starts this long after the first: with SQLite's busy_timeout of 30 s, a request answers 503
# after about half a minute instead of several.
WINDOW_SECONDS = 30.0

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_SQLITE_TEXTS = ("database is locked", "database table is locked", "database schema is locked")
# serialization_failure, deadlock_detected, lock_not_available: PostgreSQL rolled the transaction back.
_POSTGRES_STATES = frozenset({"40001", "40P01", "55P03"})
# ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK
_MYSQL_CODES = frozenset({1205, 1213})


class DatabaseBusy(ServiceUnavailable):
    """Still busy after every attempt: a 503 that says so, rather than a 500 with a traceback."""

    def __init__(self, what: str, cause: BaseException) -> None:
        reason = str(getattr(cause, "orig", cause)).strip() or type(cause).__name__
        super().__init__(
            f"the database is busy ({reason}), so {what} did not happen; try again in a few seconds"
        )


def is_busy(exc: BaseException) -> bool:
    """Whether `exc` says the database could not take the transaction now, so running it again may work."""
    if not isinstance(exc, DBAPIError):
        return False
    original = exc.orig
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return True
    state = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if state in _POSTGRES_STATES:
        return True
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_CODES:
        return True
    text = str(original).lower()
    return any(marker in text for marker in _SQLITE_TEXTS)


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: doubling from 50 ms, jittered so that writers that collided
    do not collide again, at most 2 s."""
    ceiling = min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


async def run_transaction(
    sessions: Callable[[], AsyncSession],
    work: Callable[[AsyncSession], Awaitable[T]],
    *,
    what: str,
    retry_stale: bool = False,
    attempts: int = ATTEMPTS,
) -> T:
    """Run `work` in a fresh session and commit; on a busy database roll back and run it all again.

    `work` must read what it changes inside the session it is given (a retry starts from fresh reads) and
    must not commit itself. With `retry_stale`, a row changed by someone else since `work` read it
    (optimistic locking) also runs it again: right where `work` recomputes everything from its reads.
    Raises DatabaseBusy (503) once `attempts` are spent or WINDOW_SECONDS have passed; other errors pass
    through at once.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    began = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        delay = retry_delay(attempt)
        try:
            async with sessions() as session:
                result = await work(session)
                await session.commit()
            return result
        except DBAPIError as exc:
            if not is_busy(exc):
                raise
            if attempt == attempts or time.monotonic() - began + delay > WINDOW_SECONDS:
                logger.warning("%s: the database stayed busy after %d attempts: %s", what, attempt, exc.orig)
                raise DatabaseBusy(what, exc) from exc
            logger.debug("%s: the database is busy (%s); attempt %d of %d", what, exc.orig, attempt, attempts)
        except StaleDataError:
            if not retry_stale or attempt == attempts or time.monotonic() - began + delay > WINDOW_SECONDS:
                raise
            logger.debug("%s: a row changed meanwhile; attempt %d of %d", what, attempt, attempts)
        await asyncio.sleep(delay)


async def handle_database_busy(request: Request, exc: Exception) -> JSONResponse:
    """For routes that write without run_transaction, and reads that found no free connection: a busy
    database is a 503 that says so, logged in one line. Other database errors go on as they were."""
    if isinstance(exc, PoolTimeout):
        reason = "no database connection came free in time"
    elif is_busy(exc):
        reason = str(getattr(exc, "orig", exc)).strip()
    else:
        raise exc
    logger.warning("%s %s: the database is busy: %s", request.method, request.url.path, reason)
    return error_response(
        503, "ServiceUnavailable", f"the database is busy ({reason}); try again in a few seconds"
    )
