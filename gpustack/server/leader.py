"""Leadership: campaign for the leader lease, run the controllers while holding it, stop them when it is
lost. Every server serves the API and the gateway whether or not it leads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from gpustack.server.leader_lease import RENEW_SECONDS, Holder, Lease

logger = logging.getLogger(__name__)

# A follower asks this often whether the lease has expired: a dead leader is replaced within the lease's
# time to live plus this.
CAMPAIGN_SECONDS = 1.0
# The leader steps down when it could not renew for this long before its lease would expire: it may then
# be taken over, and its controllers' transactions would fail their fence anyway.
STEP_DOWN_MARGIN_SECONDS = 3.0


@dataclass(frozen=True)
class Term:
    """One stretch of leadership of this server."""

    holder: str
    number: int
    began: float  # time.time() when it was won


class Leadership:
    """Runs `lead(term)` exactly while this server holds the lease; `lead` runs until cancelled."""

    def __init__(self, lease: Lease, lead: Callable[[Term], Coroutine[Any, Any, None]]) -> None:
        self.lease = lease
        self.lead = lead
        self.term: Term | None = None

    @property
    def is_leader(self) -> bool:
        return self.term is not None

    async def run(self, first_term: int | None = None) -> None:
        """Campaign and lead until cancelled; a clean stop releases the lease, so that another server
        takes over at once. `first_term`: a term already won (a database only one server may use)."""
        while True:
            number = first_term if first_term is not None else await self._campaign()
            first_term = None
            term = Term(self.lease.me.id, number, time.time())
            self.term = term
            logger.info(
                "this server leads the cluster (term %d): it runs the scheduler and controllers", number
            )
            leading = asyncio.create_task(self.lead(term), name="controllers")
            try:
                reason = await self._hold(number, leading)
            except asyncio.CancelledError:
                await _stop(leading)
                self.term = None
                await self._release(number)
                raise
            await _stop(leading)
            self.term = None
            logger.warning(
                "this server no longer leads the cluster (term %d): %s; it goes on serving the API",
                number,
                reason,
            )

    async def _campaign(self) -> int:
        followed: tuple[str, int] | None = None
        failing: str | None = None  # said once, not every second while the database is away
        while True:
            try:
                result = await self.lease.acquire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if str(exc) != failing:
                    failing = str(exc)
                    logger.warning(
                        "cannot reach the leader lease in the database: %s; trying every second", exc
                    )
            else:
                failing = None
                if isinstance(result, int):
                    return result
                if followed != (result.id, result.term):
                    followed = (result.id, result.term)
                    logger.info("following the leader (term %d): %s", result.term, result.describe())
            await asyncio.sleep(CAMPAIGN_SECONDS)

    async def _hold(self, number: int, leading: asyncio.Task) -> str:
        """Renew until the lease is lost; returns why it was."""
        ttl = self.lease.ttl.total_seconds()
        renewed = time.monotonic()  # when the last successful renewal was sent: the lease runs from then
        while True:
            await asyncio.wait({leading}, timeout=RENEW_SECONDS)
            if leading.done():
                problem = leading.exception() if not leading.cancelled() else None
                # The controllers never end on their own; one that did is a bug: campaign again.
                return f"its controllers stopped ({problem!r})"
            sent = time.monotonic()
            try:
                if not await self.lease.renew(number):
                    holder = await self._holder()
                    return f"another server took the lease over: {holder.describe() if holder else 'unknown'}"
                renewed = sent
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                silent = time.monotonic() - renewed
                if silent > ttl - STEP_DOWN_MARGIN_SECONDS:
                    return f"it could not renew its lease for {silent:.0f}s ({exc})"
                logger.warning("cannot renew the leader lease: %s; trying again", exc)

    async def _holder(self) -> Holder | None:
        try:
            return await self.lease.holder()
        except Exception:
            return None

    async def _release(self, number: int) -> None:
        try:
            await asyncio.wait_for(self.lease.release(number), 5)
            logger.info("released the leader lease (term %d): another server may take over now", number)
        except Exception as exc:
            logger.warning(
                "could not release the leader lease (%s): another server takes over when it expires", exc
            )


async def _stop(task: asyncio.Task) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    except Exception:
        logger.exception("the controllers failed while stopping")
