"""Keep one instance per replica of every model, and count the ready ones."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.models import ModelInstanceState
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, ModelRow

logger = logging.getLogger(__name__)

# When there are too many instances, remove those that serve nobody first.
_REMOVAL_ORDER = {
    ModelInstanceState.PENDING.value: 0,
    ModelInstanceState.ERROR.value: 1,
    ModelInstanceState.UNREACHABLE.value: 2,
    ModelInstanceState.SCHEDULED.value: 3,
    ModelInstanceState.INITIALIZING.value: 4,
    ModelInstanceState.DOWNLOADING.value: 5,
    ModelInstanceState.STARTING.value: 6,
    ModelInstanceState.RUNNING.value: 9,
}


def instance_name(model_name: str) -> str:
    return f"{model_name.replace('/', '-')}-{secrets.token_hex(4)}"


async def sync_replicas(ctx: ServerContext) -> None:
    async with ctx.replicas_lock:
        added = await run_transaction(
            ctx.session, _sync, what="matching instances to replicas", retry_stale=True
        )
    if added:
        ctx.schedule_wanted.set()


async def _sync(session: AsyncSession) -> bool:
    """Add and remove instances to match every model's replicas; True when some were added.

    Runs after every batch of instance changes: it counts instances per model and state in SQL and loads
    whole rows only of a model that has too many (reading all 10,000 instances of a large cluster after
    each report kept a core busy)."""
    created = False
    models = (await session.execute(select(ModelRow))).scalars().all()
    counted = await session.execute(
        select(ModelInstanceRow.model_id, ModelInstanceRow.state, func.count()).group_by(
            ModelInstanceRow.model_id, ModelInstanceRow.state
        )
    )
    states: dict[int, dict[str, int]] = {}
    for model_id, state, count in counted:
        states.setdefault(model_id, {})[state] = count
    for model in models:
        existing = sum(states.get(model.id, {}).values())
        if model.replicas > existing:
            logger.debug(
                "model %s: adding %d instance(s) for %d replicas",
                model.name,
                model.replicas - existing,
                model.replicas,
            )
        for _ in range(model.replicas - existing):
            session.add(
                ModelInstanceRow(
                    name=instance_name(model.name),
                    model_id=model.id,
                    model_name=model.name,
                    state=ModelInstanceState.PENDING.value,
                    state_message="waiting for the scheduler",
                )
            )
            created = True
        if existing > model.replicas:
            mine = (
                (await session.execute(select(ModelInstanceRow).where(ModelInstanceRow.model_id == model.id)))
                .scalars()
                .all()
            )
            surplus = sorted(mine, key=lambda i: (_REMOVAL_ORDER.get(i.state, 5), -i.id))
            for instance in surplus[: len(mine) - model.replicas]:
                logger.info(
                    "model %s: removing instance %s (replicas %d)",
                    model.name,
                    instance.name,
                    model.replicas,
                )
                await session.delete(instance)
        ready = states.get(model.id, {}).get(ModelInstanceState.RUNNING.value, 0)
        if model.ready_replicas != ready:
            model.ready_replicas = ready
    return created
