"""The model catalog (GET /v2/model-catalog): what the UI offers to deploy in two clicks."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request

from gpustack.server.auth import context, require_admin
from gpustack.server.errors import ServiceUnavailable
from gpustack.sources.catalog import Catalog, CatalogError, load_catalog

router = APIRouter(prefix="/v2/model-catalog", tags=["model-catalog"])


@router.get("", response_model=Catalog, dependencies=[Depends(require_admin)])
async def get_catalog(
    request: Request,
    search: str | None = Query(None, max_length=200, description="part of a name or description"),
    category: str | None = Query(None, max_length=64),
) -> Catalog:
    try:
        catalog = await asyncio.to_thread(load_catalog, context(request).config.model_catalog_file)
    except CatalogError as exc:
        raise ServiceUnavailable(f"the model catalog cannot be read: {exc}") from None
    needle = (search or "").lower()
    return Catalog(
        items=[
            entry
            for entry in catalog.items
            if (needle in entry.name.lower() or needle in entry.description.lower())
            and (category is None or category in entry.categories)
        ]
    )
