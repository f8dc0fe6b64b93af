"""Pagination, id ranges and lookups shared by the resource routes."""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeVar

from fastapi import Query, Response
from pydantic import BaseModel
from pydantic.main import IncEx
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.common import PaginatedList, Pagination
from gpustack.server.errors import BadRequest, NotFound

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
        fields: str | None = Query(
            None,
            max_length=2000,
            description="only these fields of each item, comma-separated (id,name,state); all when omitted",
        ),
    ) -> None:
        self.page = page
        self.per_page = per_page
        self.fields = [name.strip() for name in (fields or "").split(",") if name.strip()] or None

    def included(self, view: type[BaseModel]) -> set[str] | None:
        """The fields of `view` asked for, or None for all; a name `view` does not have is a 400."""
        if self.fields is None:
            return None
        unknown = [name for name in self.fields if name not in view.model_fields]
        if unknown:
            raise BadRequest(
                f"unknown field(s) {', '.join(map(repr, unknown))} in 'fields'; "
                f"choose from: {', '.join(view.model_fields)}"
            )
        return set(self.fields)


async def paginate(
    session: AsyncSession, statement: Select[Any], params: PageParams, view: type[V]
) -> Response:
    """One page of `statement`'s rows as `view`, serialized once: the route's response_model documents
    the shape, but FastAPI would validate and encode every item a second time (most of a list's cost)."""
    include = params.included(view)
    total = (await session.execute(select(func.count()).select_from(statement.subquery()))).scalar_one()
    rows = (
        (await session.execute(statement.offset((params.page - 1) * params.per_page).limit(params.per_page)))
        .scalars()
        .all()
    )
    page = PaginatedList[view](  # type: ignore[valid-type]
        items=[view.model_validate(row) for row in rows],
        pagination=Pagination(
            page=params.page,
            per_page=params.per_page,
            total=total,
            total_page=max(1, math.ceil(total / params.per_page)),
        ),
    )
    if include is None:
        return Response(page.model_dump_json(by_alias=True), media_type="application/json")
    each: dict[str, IncEx | bool] = {"__all__": include}
    only: dict[str, IncEx | bool] = {"items": each, "pagination": True}
    return Response(page.model_dump_json(by_alias=True, include=only), media_type="application/json")


async def get_or_404(session: AsyncSession, table: type[Any], row_id: int, what: str) -> Any:
    """The row, or 404; an id outside what an id can be is simply not found (and never sent to the
    database, whose driver would fail on it)."""
    row = await session.get(table, row_id) if 1 <= row_id <= MAX_ID else None
    if row is None:
        raise NotFound(f"{what} {row_id} not found")
    return row
