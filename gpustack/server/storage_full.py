"""A full disk, recognised whatever reports it (SQLite, PostgreSQL, MySQL, the OS), and answered with 507."""

from __future__ import annotations

import errno
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from gpustack.server.errors import error_response

_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_POSTGRES_DISK_FULL = "53100"  # SQLSTATE disk_full
_MYSQL_FULL = {1021, 1114}  # ER_DISK_FULL, ER_RECORD_FILE_FULL ("The table is full")
_OUT_OF_SPACE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class StorageFull(OperationalError):
    """Raised in place of a driver's own error when the database could not write for want of space.

    A subclass of OperationalError, so code that catches database errors still catches it."""


def _causes(error: BaseException) -> list[BaseException]:
    """The error, the driver error it wraps and the errors it was raised from, each once."""
    seen: list[BaseException] = []
    stack: list[Any] = [error]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        stack += [getattr(current, "orig", None), current.__cause__, current.__context__]
    return seen


def _says_out_of_space(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _OUT_OF_SPACE_ERRNOS:
        return True
    if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL or "database or disk is full" in str(error):
        return True
    if getattr(error, "sqlstate", None) == _POSTGRES_DISK_FULL or getattr(error, "pgcode", None) == (
        _POSTGRES_DISK_FULL
    ):
        return True
    args: tuple[Any, ...] = getattr(error, "args", ())
    is_mysql = type(error).__module__.startswith(("pymysql", "aiomysql"))
    return is_mysql and bool(args) and args[0] in _MYSQL_FULL


def is_out_of_space(error: BaseException) -> bool:
    return any(_says_out_of_space(cause) for cause in _causes(error))


def install(engine: AsyncEngine) -> None:
    """Make every statement and commit of `engine` that fails for want of space raise StorageFull."""

    @event.listens_for(engine.sync_engine, "handle_error")
    def _out_of_space(context: Any) -> BaseException | None:
        original = context.original_exception
        if isinstance(original, StorageFull) or not is_out_of_space(original):
            return None
        return StorageFull(context.statement, context.parameters, original)


def where_to_free_space(database_file: str | None) -> str:
    if database_file:
        return f"free space on the disk that holds {database_file}"
    return "free space on the database server's disk"


async def handle_storage_full(request: Request, exc: Exception) -> JSONResponse:
    """507 Insufficient Storage in the management API's error shape; the request changed nothing."""
    from gpustack.server.db.engine import sqlite_file

    ctx = getattr(request.app.state, "ctx", None)
    database = sqlite_file(ctx.config.database_url) if ctx is not None else None
    cause = getattr(exc, "orig", None) or exc
    return error_response(
        507,
        "InsufficientStorage",
        f"the database could not save this change because its disk is full ({cause}); nothing was saved. "
        f"{where_to_free_space(str(database) if database else None).capitalize()}, then try again.",
    )
