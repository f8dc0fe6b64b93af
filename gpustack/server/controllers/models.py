"""Keep one instance per replica of every model, and count the ready ones."""

from __future__ import annotations

import logging
import secrets

from sqlalchemy import select
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
    if await run_transaction(ctx.session, _sync, what="matching instances to replicas", retry_stale=True):
        ctx.schedule_wanted.set()


async def _sync(session: AsyncSession) -> bool:
    """Add and remove instances to match every model's replicas; True when some were added."""
    created = False
    models = (await session.execute(select(ModelRow))).scalars().all()
    instances = (await session.execute(select(ModelInstanceRow))).scalars().all()
    by_model: dict[int, list[ModelInstanceRow]] = {}
    for instance in instances:
        by_model.setdefault(instance.model_id, []).append(instance)
    for model in models:
        mine = by_model.get(model.id, [])
        if model.replicas > len(mine):
            logger.debug(
                "model %s: adding %d instance(s) for %d replicas",
                model.name,
                model.replicas - len(mine),
                model.replicas,
            )
        for _ in range(model.replicas - len(mine)):
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
        if len(mine) > model.replicas:
            surplus = sorted(mine, key=lambda i: (_REMOVAL_ORDER.get(i.state, 5), -i.id))
            for instance in surplus[: len(mine) - model.replicas]:
                logger.info(
                    "model %s: removing instance %s (replicas %d)",
                    model.name,
                    instance.name,
                    model.replicas,
                )
                await session.delete(instance)
        ready = sum(1 for i in mine if i.state == ModelInstanceState.RUNNING.value)
        if model.ready_replicas != ready:
            model.ready_replicas = ready
    return created
