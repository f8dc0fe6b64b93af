"""The worker's routes for model files, for its server only: remove a copy, download one again, and list and
read (by ranges) a local model's files so that the server can estimate a model that only workers have."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi.responses import FileResponse
from pydantic import ValidationError

from gpustack.schemas.models import ModelSpec
from gpustack.worker.files.manager import FileManager, FilesUnavailable

logger = logging.getLogger(__name__)

# Only what a header reader needs: model files and their JSON configs.
_READABLE = (".gguf", ".safetensors", ".json")
_MAX_LISTED = 10_000


def _listing(path: str) -> dict[str, Any]:
    if os.path.isfile(path):
        folder = os.path.dirname(path)
        names = [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
        return {"folder": folder, "files": {n: os.path.getsize(os.path.join(folder, n)) for n in names}}
    files: dict[str, int] = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, path).replace(os.sep, "/")] = os.path.getsize(full)
            if len(files) >= _MAX_LISTED:
                break
    return {"folder": path, "files": files}


def files_router(require_token: Callable[..., Awaitable[None]], manager: FileManager) -> APIRouter:
    router = APIRouter(prefix="/model-files", dependencies=[Depends(require_token)])
    tasks: set[asyncio.Task[Any]] = set()

    @router.get("/listing")
    async def listing(path: str = Query(..., max_length=4096)) -> dict[str, Any]:
        if not os.path.isabs(path) or not await asyncio.to_thread(os.path.exists, path):
            raise HTTPException(404, f"{path} is not on this worker")
        return await asyncio.to_thread(_listing, path)

    @router.get("/raw")
    async def raw(path: str = Query(..., max_length=4096)) -> FileResponse:
        readable = os.path.isabs(path) and path.endswith(_READABLE)
        if not (readable and await asyncio.to_thread(os.path.isfile, path)):
            raise HTTPException(404, f"{path} is not a model file on this worker")
        return FileResponse(path, media_type="application/octet-stream")

    @router.delete("")
    async def remove(cache_key: str = Body(..., embed=True, max_length=512)) -> dict[str, Any]:
        removed = await manager.remove(cache_key)
        return {"removed": removed}

    @router.post("/download", status_code=202)
    async def download(
        model_id: int = Body(..., embed=True, ge=1), spec: dict[str, Any] = Body(..., embed=True)
    ) -> dict[str, Any]:
        try:
            model = ModelSpec.model_validate(spec)
        except ValidationError as exc:
            raise HTTPException(400, f"not a model spec: {exc}") from None

        async def run() -> None:
            try:
                await manager.ensure(model, model_id)
            except FilesUnavailable as exc:
                logger.warning("retried download failed: %s", exc)

        task = asyncio.create_task(run())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return {"started": True}

    return router
