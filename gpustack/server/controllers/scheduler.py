"""The scheduler's shell: estimate pending instances, snapshot the cluster, place, and record the result."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from sqlalchemy import select

from gpustack.estimate.gguf import GGUFError, read_gguf_shards
from gpustack.estimate.llama_box import estimate_llama_box, parse_llama_box_options
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.place import MemoryRequirement, NoPlacement, PlacementRequest, place
from gpustack.schemas.models import ModelInstanceState, PlacementStrategy, ResourceClaim
from gpustack.schemas.workers import SystemReserved, WorkerStatus
from gpustack.server.context import ServerContext
from gpustack.server.db.tables import ModelInstanceRow, ModelRow, WorkerRow
from gpustack.server.services import set_instance_state

logger = logging.getLogger(__name__)


class EstimateError(Exception):
    """The model cannot be estimated (file unreadable, bad parameters); the message says what to fix."""


@dataclass(frozen=True)
class _EstimateKey:
    path: str
    size: int
    mtime: float
    parameters: tuple[str, ...]


class Estimates:
    """Memory requirements per model, computed from its file header once per (file, parameters)."""

    def __init__(self) -> None:
        self._cache: dict[_EstimateKey, MemoryRequirement] = {}

    async def requirement(self, model: ModelRow) -> MemoryRequirement:
        return await asyncio.to_thread(
            self._requirement_blocking, model.local_path or "", model.backend_parameters
        )

    def _requirement_blocking(self, path: str, parameters: list[str]) -> MemoryRequirement:
        try:
            stat = os.stat(path)
        except OSError as exc:
            raise EstimateError(
                f"cannot read {path} on the server to estimate its memory ({exc.strerror}); "
                "the file must exist at this absolute path on the server and on the worker"
            ) from None
        key = _EstimateKey(path, stat.st_size, stat.st_mtime, tuple(parameters))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        try:
            options = parse_llama_box_options(parameters)
        except ValueError as exc:
            raise EstimateError(f"backend parameters: {exc}") from None
        if options.cache_ram_mib is None:
            options.cache_ram_mib = 0  # the worker turns the prompt cache off unless the user sets it
        try:
            shards = read_gguf_shards(path)
        except GGUFError as exc:
            raise EstimateError(str(exc)) from None
        estimate = estimate_llama_box(shards[0], options, shards)
        # Memory the engine may add while serving (prompt cache, context checkpoints) is claimed up front.
        requirement = MemoryRequirement(
            cpu_only_ram=estimate.cpu_only.ram + estimate.growth_bytes,
            gpu_ram=estimate.full_offload.ram + estimate.growth_bytes,
            gpu_vram=estimate.full_offload.vram,
            total_layers=estimate.total_layers,
            description=estimate.describe(),
        )
        if len(self._cache) > 1000:
            self._cache.clear()
        self._cache[key] = requirement
        return requirement


def _snapshot(worker: WorkerRow) -> WorkerSnapshot:
    status = WorkerStatus.model_validate(worker.status or {})
    reserved = SystemReserved.model_validate(worker.system_reserved or {})
    return WorkerSnapshot(
        id=worker.id,
        name=worker.name,
        state=worker.state,
        state_message=worker.state_message,
        labels=dict(worker.labels or {}),
        ram_total=status.memory.total,
        ram_reserved=reserved.ram,
        unified_memory=status.memory.is_unified_memory,
        gpus=[
            GPUSnapshot(
                index=gpu.index, id=gpu.id, name=gpu.name, total=gpu.memory.total, reserved=reserved.vram
            )
            for gpu in status.gpu_devices
        ],
    )


async def schedule_pending(ctx: ServerContext, estimates: Estimates) -> None:
    async with ctx.session() as session:
        pending = (
            (
                await session.execute(
                    select(ModelInstanceRow)
                    .where(ModelInstanceRow.state == ModelInstanceState.PENDING.value)
                    .order_by(ModelInstanceRow.id)
                )
            )
            .scalars()
            .all()
        )
        if not pending:
            return
        workers = (await session.execute(select(WorkerRow).order_by(WorkerRow.id))).scalars().all()
        snapshots = {worker.id: _snapshot(worker) for worker in workers}
        placed = (
            await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.worker_id.is_not(None)))
        ).scalars()
        for instance in placed:
            if instance.worker_id in snapshots and instance.computed_resource_claim:
                snapshots[instance.worker_id].add_claim(
                    ResourceClaim.model_validate(instance.computed_resource_claim)
                )
        models = {m.id: m for m in (await session.execute(select(ModelRow))).scalars().all()}
        for instance in pending:
            model = models.get(instance.model_id)
            if model is None:
                continue
            worker_ips = {worker.id: worker.ip for worker in workers}
            await _schedule_one(instance, model, list(snapshots.values()), worker_ips, estimates)
        await session.commit()


async def _schedule_one(
    instance: ModelInstanceRow,
    model: ModelRow,
    workers: list[WorkerSnapshot],
    worker_ips: dict[int, str],
    estimates: Estimates,
) -> None:
    try:
        requirement = await estimates.requirement(model)
    except EstimateError as exc:
        _set_pending_message(instance, str(exc))
        return
    request = PlacementRequest(
        model_name=model.name,
        requirement=requirement,
        placement_strategy=PlacementStrategy(model.placement_strategy),
        worker_selector=dict(model.worker_selector or {}),
        gpu_ids=tuple((model.gpu_selector or {}).get("gpu_ids", [])),
        cpu_offloading=model.cpu_offloading,
    )
    result = place(request, workers)
    if isinstance(result, NoPlacement):
        _set_pending_message(instance, f"{result.message()}\nNeeds: {requirement.description}")
        return
    worker = next(w for w in workers if w.id == result.worker_id)
    worker.add_claim(result.claim)  # later placements in this round see this claim
    instance.worker_id = result.worker_id
    instance.worker_name = result.worker_name
    instance.worker_ip = worker_ips[result.worker_id]
    instance.gpu_indexes = result.gpu_indexes
    instance.computed_resource_claim = result.claim.model_dump(mode="json")
    set_instance_state(
        instance, ModelInstanceState.SCHEDULED, f"{result.summary} ({requirement.description})"
    )
    logger.info("model instance %s %s", instance.name, result.summary)


def _set_pending_message(instance: ModelInstanceRow, message: str) -> None:
    if instance.state_message != message:
        logger.info("model instance %s stays pending: %s", instance.name, message.splitlines()[0])
        instance.state_message = message
