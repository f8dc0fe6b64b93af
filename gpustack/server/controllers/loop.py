"""Run a reconcile step forever: on a timer, or sooner when woken."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm.exc import StaleDataError

from gpustack.server.db.retry import DatabaseBusy
from gpustack.server.leader_lease import NotLeader

logger = logging.getLogger(__name__)


async def reconcile_forever(
    name: str, step: Callable[[], Awaitable[None]], interval: float, wake: asyncio.Event | None = None
) -> None:
    """Call `step` every `interval` seconds, or as soon as `wake` is set; one failure never stops the loop."""
    while True:
        if wake is not None:
            wake.clear()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except StaleDataError:
            logger.info("%s: a row changed under this step; it runs again", name)
        except NotLeader:
            # Another server took the lease over; this loop is being stopped.
            logger.info("%s: this server no longer leads the cluster; the step did not run", name)
        except DatabaseBusy as exc:
            logger.warning("%s: %s; retrying in %.0fs", name, exc.message, interval)
        except PoolTimeout:
            logger.warning("%s: no database connection came free in time; retrying in %.0fs", name, interval)
        except Exception:
            logger.exception("%s: reconcile step failed; retrying in %.0fs", name, interval)
        if wake is None:
            await asyncio.sleep(interval)
            continue
        try:
            await asyncio.wait_for(wake.wait(), interval)
        except asyncio.TimeoutError:
            pass
