"""State changes of instances and workers that several routes and controllers make the same way."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.models import ModelInstanceState
from gpustack.schemas.workers import WorkerState
from gpustack.server.db.tables import ModelInstanceRow, WorkerRow, utcnow


def set_instance_state(row: ModelInstanceRow, state: ModelInstanceState, message: str = "") -> None:
    if row.state != state.value:
        row.state_changed_at = utcnow()
    row.state = state.value
    row.state_message = message


def return_to_pending(row: ModelInstanceRow, message: str) -> None:
    """Take an instance off its worker so the scheduler places it again."""
    row.worker_id = None
    row.worker_name = None
    row.worker_ip = None
    row.port = None
    row.pid = None
    row.gpu_indexes = []
    row.computed_resource_claim = None
    row.subordinate_workers = []
    row.placement = None
    set_instance_state(row, ModelInstanceState.PENDING, message)


async def instances_on_worker(
    session: AsyncSession, worker_id: int, include_lent: bool = False
) -> list[ModelInstanceRow]:
    """Instances the worker runs; with `include_lent`, also those it lends GPUs to (as a subordinate),
    which cannot work without it either."""
    if not include_lent:
        result = await session.execute(
            select(ModelInstanceRow).where(ModelInstanceRow.worker_id == worker_id)
        )
        return list(result.scalars())
    placed = await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.worker_id.is_not(None)))
    return [row for row in placed.scalars() if worker_id in involved_workers(row)]


def involved_workers(row: ModelInstanceRow) -> set[int]:
    """The worker running the instance and those lending it GPUs."""
    ids = {part["worker_id"] for part in row.subordinate_workers or []}
    if row.worker_id is not None:
        ids.add(row.worker_id)
    return ids


def set_worker_state(row: WorkerRow, state: WorkerState, message: str = "") -> None:
    row.state = state.value
    row.state_message = message
