"""Shapes shared by every resource: pagination, list envelopes, API errors."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

GiB = 1024**3
MiB = 1024**2


class Pagination(BaseModel):
    page: int
    per_page: int = Field(serialization_alias="perPage")
    total: int
    total_page: int = Field(serialization_alias="totalPage")

    model_config = ConfigDict(populate_by_name=True)


class PaginatedList(BaseModel, Generic[T]):
    items: list[T]
    pagination: Pagination
