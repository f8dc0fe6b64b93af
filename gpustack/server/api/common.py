"""Pagination, id ranges and lookups shared by the resource routes."""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.common import PaginatedList, Pagination
from gpustack.server.errors import NotFound

V = TypeVar("V", bound=BaseModel)

# Ids are INTEGER columns: 32 bits on PostgreSQL, the narrowest of the databases. A larger number cannot be
# an id anywhere, and binding it fails inside the driver (SQLite from 2**63, PostgreSQL from 2**31).
MAX_ID = 2**31 - 1

QueryId = Annotated[
    int | None, Query(ge=1, le=MAX_ID, description=f"an id, from 1 to {MAX_ID}; omit for any")
]


class PageParams:
    def __init__(
        self,
        page: int = Query(1, ge=1, le=MAX_ID, description="page number, from 1"),
        per_page: int = Query(100, ge=1, le=1000, alias="perPage", description="items per page"),
    ) -> None:
        self.page = page
        self.per_page = per_page


async def paginate(
    session: AsyncSession, statement: Select[Any], params: PageParams, view: type[V]
) -> PaginatedList[V]:
    total = (await session.execute(select(func.count()).select_from(statement.subquery()))).scalar_one()
    rows = (
        (await session.execute(statement.offset((params.page - 1) * params.per_page).limit(params.per_page)))
        .scalars()
        .all()
    )
    return PaginatedList[view](  # type: ignore[valid-type]
        items=[view.model_validate(row) for row in rows],
        pagination=Pagination(
            page=params.page,
            per_page=params.per_page,
            total=total,
            total_page=max(1, math.ceil(total / params.per_page)),
        ),
    )


async def get_or_404(session: AsyncSession, table: type[Any], row_id: int, what: str) -> Any:
    """The row, or 404; an id outside what an id can be is simply not found (and never sent to the
    database, whose driver would fail on it)."""
    row = await session.get(table, row_id) if 1 <= row_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row
