"""Instance lifecycles the server owns: restarts after errors, with backoff, and deadlines."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from gpustack.schemas.engine_settings import check_backend_parameters, check_environment
from gpustack.schemas.models import ModelInstanceState
from gpustack.server.context import ServerContext
from gpustack.server.db.retry import run_transaction
from gpustack.server.db.tables import ModelInstanceRow, ModelRow
from gpustack.server.services import return_to_pending, set_instance_state

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 300.0
# A worker that has not started on an assignment within this time is presumed stuck on it.
SCHEDULED_DEADLINE = timedelta(minutes=3)
# A worker reports progress while it brings an engine up (its own startup deadline is 10 minutes); past
# this, silence means the worker lost track of the instance, which then fails and restarts as usual.
STARTING_DEADLINE = timedelta(minutes=15)
# A run at least this long counts as healthy: the next failure starts the backoff from the beginning.
STABLE_RUN = timedelta(minutes=10)


_WATCHED_STATES = {
    ModelInstanceState.ERROR.value,
    ModelInstanceState.SCHEDULED.value,
    ModelInstanceState.INITIALIZING.value,
    ModelInstanceState.STARTING.value,
}


def settings_problem(model: ModelRow) -> str | None:
    """Why the model's stored parameters or environment cannot start an engine, if they cannot."""
    try:
        check_backend_parameters(model.backend_parameters or [])
        check_environment(model.env or {})
    except ValueError as exc:
        return str(exc)
    return None


def restart_delay(restart_count: int) -> float:
    """Seconds to wait before the next restart: 5, 10, 20, ... up to 5 minutes."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(restart_count, 16))


async def restart_and_expire(ctx: ServerContext) -> None:
    await run_transaction(
        ctx.session, _restart_and_expire, what="restarting and expiring instances", retry_stale=True
    )


async def _restart_and_expire(session: AsyncSession) -> None:
    now = datetime.now(timezone.utc)
    rows = await session.execute(
        select(ModelInstanceRow, ModelRow)
        .join(ModelRow, ModelRow.id == ModelInstanceRow.model_id)
        .where(ModelInstanceRow.state.in_(list(_WATCHED_STATES)))
    )
    for instance, model in rows.all():
        waited = (now - instance.state_changed_at).total_seconds()
        if instance.state == ModelInstanceState.ERROR.value:
            if not model.restart_on_error or instance.worker_id is None:
                continue
            problem = settings_problem(model)
            if problem is not None:
                # Settings stored before the API checked them would fail the same way on every restart.
                message = (
                    f"not restarted: the model's settings cannot start an engine: {problem}. "
                    f"Change them with PUT /v2/models/{model.id} and it restarts"
                )
                if instance.state_message != message:
                    logger.warning("model instance %s is not restarted: %s", instance.name, problem)
                    instance.state_message = message
                continue
            ran = instance.state_changed_at - (instance.last_restart_at or instance.created_at)
            if ran >= STABLE_RUN:
                instance.restart_count = 0
            if waited < restart_delay(instance.restart_count):
                continue
            instance.restart_count += 1
            instance.last_restart_at = now
            first_line = instance.state_message.splitlines()[0] if instance.state_message else "error"
            logger.info("restarting model instance %s (attempt %d)", instance.name, instance.restart_count)
            set_instance_state(
                instance,
                ModelInstanceState.SCHEDULED,
                f"restarting after an error (attempt {instance.restart_count}): {first_line}",
            )
        elif instance.state == ModelInstanceState.SCHEDULED.value:
            if waited > SCHEDULED_DEADLINE.total_seconds():
                return_to_pending(
                    instance,
                    f"worker {instance.worker_name} did not start the instance within "
                    f"{SCHEDULED_DEADLINE.total_seconds():.0f}s; placing it again",
                )
        elif waited > STARTING_DEADLINE.total_seconds():
            set_instance_state(
                instance,
                ModelInstanceState.ERROR,
                f"worker {instance.worker_name} reported no progress for "
                f"{STARTING_DEADLINE.total_seconds() / 60:.0f} minutes while {instance.state}",
            )
