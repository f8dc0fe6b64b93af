"""The scheduler's shell: snapshot the cluster from the database, place pending instances, record it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.metrics.server import ESTIMATE_FAILED, NO_FIT, PLACED
from gpustack.scheduler.candidates import NoPlacement, Placement
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.place import PlacementRequest, place
from gpustack.schemas.models import (
    ModelInstanceState,
    ModelSpec,
    PlacementDetail,
    PlacementStrategy,
    ResourceClaim,
    SubordinateWorker,
)
from gpustack.schemas.workers import SystemReserved, WorkerState, WorkerStatus
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, ModelRow, WorkerRow
from gpustack.server.requirements import EstimateError, Requirement, Requirements, WorkerEndpoint
from gpustack.server.services import set_instance_state
from gpustack.sources.registry import source_of
from gpustack.utils.units import format_bytes

logger = logging.getLogger(__name__)

# Placements written by one round's transaction. A round that placed 3,000 instances held SQLite's one
# write lock for seconds while it wrote them (heartbeats and reports queued behind it, workers turned
# not_ready); the next round starts at once and sees these claims in its snapshot.
ROUND_PLACEMENTS = 200


def worker_snapshot(worker: WorkerRow) -> WorkerSnapshot:
    status = WorkerStatus.model_validate(worker.status or {})
    reserved = SystemReserved.model_validate(worker.system_reserved or {})
    return WorkerSnapshot(
        id=worker.id,
        name=worker.name,
        ip=worker.ip,
        state=worker.state,
        state_message=worker.state_message,
        labels=dict(worker.labels or {}),
        ram_total=status.memory.total,
        ram_reserved=reserved.ram,
        unified_memory=status.memory.is_unified_memory,
        cpu_cores=status.cpu.total,
        ray_head_ports=tuple(status.ray_head_ports),
        gpus=[
            GPUSnapshot(
                index=gpu.index,
                id=gpu.id,
                name=gpu.name,
                type=gpu.type.value,
                vendor=gpu.vendor,
                total=gpu.memory.total,
                reserved=reserved.vram,
                rpc_port=status.rpc_servers.get(gpu.index),
            )
            for gpu in status.gpu_devices
        ],
    )


def claims_of(instance: Any) -> Iterable[tuple[int, ResourceClaim]]:
    """(worker id, claim) for every worker the instance (a row or its placement columns) holds memory on:
    its own and subordinates'."""
    if instance.worker_id is not None and instance.computed_resource_claim:
        yield instance.worker_id, ResourceClaim.model_validate(instance.computed_resource_claim)
    for subordinate in instance.subordinate_workers or []:
        yield subordinate["worker_id"], ResourceClaim.model_validate(subordinate["claim"])


async def cluster_snapshot(session: AsyncSession) -> list[WorkerSnapshot]:
    """Every worker with the claims of every placed instance counted, in any state."""
    workers = (await session.execute(select(WorkerRow).order_by(WorkerRow.id))).scalars().all()
    snapshots = {worker.id: worker_snapshot(worker) for worker in workers}
    # The placement columns only, as plain rows: a round at 10,000 placed instances spent most of its
    # time building ORM objects it only read.
    placed = await session.execute(
        select(
            ModelInstanceRow.worker_id,
            ModelInstanceRow.computed_resource_claim,
            ModelInstanceRow.subordinate_workers,
            ModelInstanceRow.placement,
        ).where(ModelInstanceRow.worker_id.is_not(None))
    )
    for instance in placed:
        for worker_id, claim in claims_of(instance):
            if worker_id in snapshots:
                snapshots[worker_id].add_claim(claim)
        if not instance.placement:
            continue
        detail = PlacementDetail.model_validate(instance.placement)
        if detail.rpc_servers:  # lent
            for part in instance.subordinate_workers or []:
                if part["worker_id"] in snapshots:
                    snapshots[part["worker_id"]].rpc_lent.update(part["gpu_indexes"])
        head = getattr(detail.layout, "ray_head_port", None)
        if head and instance.worker_id in snapshots:
            snapshots[instance.worker_id].ray_heads.add(head)
    return list(snapshots.values())


def placement_request(spec: ModelSpec, name: str, requirement: Requirement) -> PlacementRequest:
    return PlacementRequest(
        model_name=name,
        backend=spec.backend.value,
        need=requirement.need,
        placement_strategy=PlacementStrategy(spec.placement_strategy),
        worker_selector=dict(spec.worker_selector or {}),
        gpu_ids=tuple(spec.gpu_selector.gpu_ids) if spec.gpu_selector else (),
        cpu_offloading=spec.cpu_offloading,
        distributed_inference_across_workers=spec.distributed_inference_across_workers,
    )


@dataclass
class Outcome:
    placement: Placement | NoPlacement
    requirement: Requirement


async def evaluate(
    spec: ModelSpec,
    name: str,
    workers: list[WorkerSnapshot],
    requirements: Requirements,
    endpoints: Sequence[WorkerEndpoint] = (),
) -> Outcome:
    """Where the model would go now (or why nowhere). Raises EstimateError when it cannot be estimated.
    `endpoints`: the workers that may be asked for a local path the server does not have."""
    requirement = await requirements.of(spec, endpoints)
    return Outcome(place(placement_request(spec, name, requirement), workers), requirement)


def describe_cluster(workers: list[WorkerSnapshot]) -> str:
    """What is allocatable where, on one line: for the debug log of each scheduling round."""
    parts = []
    for worker in workers:
        gpus = ", ".join(
            f"GPU {index} {format_bytes(free)}" for index, free in sorted(worker.vram_free.items())
        )
        parts.append(
            f"{worker.name} ({worker.state}, {worker.instances} placed): RAM {format_bytes(worker.ram_free)}"
            + (f", {gpus}" if gpus else "")
        )
    return "; ".join(parts) or "no workers"


async def _endpoints(ctx: ServerContext, session: AsyncSession) -> list[WorkerEndpoint]:
    """The ready workers, to ask for a local path's headers when the server lacks the file."""
    rows = await session.execute(select(WorkerRow).where(WorkerRow.state == WorkerState.READY.value))
    return [
        WorkerEndpoint(w.name, f"http://{w.ip}:{w.port}", ctx.worker_credential(w.id)) for w in rows.scalars()
    ]


async def analyze_pending(ctx: ServerContext, requirements: Requirements) -> list[WorkerEndpoint]:
    """Read the headers of models whose pending instances wait for an estimate that is not known yet,
    with those instances `analyzing` meanwhile (a hub's headers take seconds); the placement round then
    finds the estimates cached. Returns the worker endpoints used."""
    waiting = (ModelInstanceState.PENDING.value, ModelInstanceState.ANALYZING.value)
    async with ctx.session() as session:
        rows = (
            await session.execute(
                select(ModelInstanceRow.id, ModelRow)
                .join(ModelRow, ModelRow.id == ModelInstanceRow.model_id)
                .where(ModelInstanceRow.state.in_(waiting))
            )
        ).all()
        if not rows:
            return []
        endpoints = await _endpoints(ctx, session)
    models: dict[int, tuple[ModelSpec, str, list[int]]] = {}
    for instance_id, model in rows:
        if model.id not in models:
            try:
                spec = ModelSpec.model_validate(model, from_attributes=True)
            except ValueError:
                continue  # the placement round says what is wrong with it
            models[model.id] = (spec, model.name, [])
        models[model.id][2].append(instance_id)
    for spec, name, ids in models.values():
        if requirements.known(spec):
            continue
        what = source_of(spec.source).describe(spec) or name
        message = f"reading the headers of {what} to estimate the memory it needs"

        async def mark(session: AsyncSession, ids: list[int] = ids, message: str = message) -> None:
            for row in (
                await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.id.in_(ids)))
            ).scalars():
                if row.state in waiting:
                    set_instance_state(row, ModelInstanceState.ANALYZING, message)

        await run_transaction(ctx.session, mark, what="marking instances analyzing", retry_stale=True)
        try:
            await requirements.of(spec, endpoints)
        except EstimateError as exc:
            logger.info("model %s cannot be estimated: %s", name, exc)
    return endpoints


async def schedule_pending(ctx: ServerContext, requirements: Requirements) -> None:
    endpoints = await analyze_pending(ctx, requirements)
    outcomes: list[str] = []
    started = time.perf_counter()

    async def schedule(session: AsyncSession) -> bool:
        """Place what fits; True when the round stopped at ROUND_PLACEMENTS with more to place."""
        outcomes.clear()  # a round run again counts once
        pending = (
            (
                await session.execute(
                    select(ModelInstanceRow)
                    .where(
                        ModelInstanceRow.state.in_(
                            [ModelInstanceState.PENDING.value, ModelInstanceState.ANALYZING.value]
                        )
                    )
                    .order_by(ModelInstanceRow.id)
                )
            )
            .scalars()
            .all()
        )
        if not pending:
            return False
        workers = await cluster_snapshot(session)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "placing %d pending instance(s); allocatable: %s", len(pending), describe_cluster(workers)
            )
        models = {m.id: m for m in (await session.execute(select(ModelRow))).scalars().all()}
        placed = 0
        for instance in pending:
            model = models.get(instance.model_id)
            if model is None:
                continue
            outcomes.append(await _schedule_one(instance, model, workers, requirements, endpoints))
            placed += outcomes[-1] == PLACED
            if placed >= ROUND_PLACEMENTS:
                return True  # the rest in the next round, after this one's commit
        return False

    # An instance changed while the round ran (a worker's report, a deletion): run it again on fresh reads.
    more = await run_transaction(ctx.session, schedule, what="placing pending instances", retry_stale=True)
    if more:
        ctx.schedule_wanted.set()
    if ctx.metrics is not None and outcomes:
        ctx.metrics.scheduling_duration.observe(time.perf_counter() - started)
        for outcome in outcomes:
            ctx.metrics.scheduling_decisions.labels(outcome).inc()


async def _schedule_one(
    instance: ModelInstanceRow,
    model: ModelRow,
    workers: list[WorkerSnapshot],
    requirements: Requirements,
    endpoints: Sequence[WorkerEndpoint] = (),
) -> str:
    """Place one pending instance, or say why it stays pending; returns the outcome for the metrics."""
    spec = ModelSpec.model_validate(model, from_attributes=True)
    try:
        outcome = await evaluate(spec, model.name, workers, requirements, endpoints)
    except EstimateError as exc:
        logger.debug("model instance %s: cannot estimate model %s: %s", instance.name, model.name, exc)
        _set_pending_message(instance, str(exc))
        return ESTIMATE_FAILED
    result = outcome.placement
    logger.debug(
        "model instance %s (model %s, backend %s) needs %s",
        instance.name,
        model.name,
        spec.backend.value,
        outcome.requirement.description,
    )
    if isinstance(result, NoPlacement):
        _set_pending_message(instance, f"{result.message()}\nNeeds: {outcome.requirement.description}")
        return NO_FIT
    result.apply()  # later placements in this round see its claims
    main = result.main
    instance.worker_id = main.worker.id
    instance.worker_name = main.worker.name
    instance.worker_ip = main.worker.ip
    instance.gpu_indexes = main.gpu_indexes
    instance.computed_resource_claim = main.claim.model_dump(mode="json")
    instance.subordinate_workers = [
        SubordinateWorker(
            worker_id=a.worker.id,
            worker_name=a.worker.name,
            worker_ip=a.worker.ip,
            gpu_indexes=a.gpu_indexes,
            claim=a.claim,
        ).model_dump(mode="json")
        for a in result.subordinates
    ]
    instance.placement = PlacementDetail(mode=result.mode, layout=result.layout).model_dump(mode="json")
    set_instance_state(
        instance,
        ModelInstanceState.SCHEDULED,
        f"placed on {result.summary} ({outcome.requirement.description})",
    )
    logger.info("model instance %s placed on %s", instance.name, result.summary)
    logger.debug(
        "model instance %s: mode %s, claim %s, layout %s",
        instance.name,
        result.mode.value,
        instance.computed_resource_claim,
        result.layout,
    )
    return PLACED


def _set_pending_message(instance: ModelInstanceRow, message: str) -> None:
    first_line = message.partition("\n")[0]
    if instance.state == ModelInstanceState.ANALYZING.value:
        set_instance_state(instance, ModelInstanceState.PENDING, instance.state_message)
    if instance.state_message == message:
        logger.debug("model instance %s stays pending, for the same reason: %s", instance.name, first_line)
        return
    logger.info("model instance %s stays pending: %s", instance.name, first_line)
    # The reasons worker by worker and GPU by GPU, which the line above leaves out.
    logger.debug("model instance %s: why nothing fits:\n%s", instance.name, message)
    instance.state_message = message
