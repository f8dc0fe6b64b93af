"""Which instance takes a request: the one with the fewest requests outstanding (in flight from this
server), ties broken in turn; an instance that keeps failing is left out for a while.

Pure bookkeeping over instance ids, no I/O: the relay calls `order` before sending, `started`/`finished`
around each attempt, and `failed`/`succeeded` with what the attempt found. With every instance of a model
left out, all are tried anyway: refusing a request outright is worse than trying a doubtful instance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger("gpustack.server.gateway")

E = TypeVar("E")

# Consecutive failures (nothing answered) that take an instance out, and for how long at first; each
# further failure after its return doubles the time, up to the maximum.
FAILURES_TO_EJECT = 3
EJECT_SECONDS = 5.0
MAX_EJECT_SECONDS = 60.0


@dataclass
class _Health:
    outstanding: int = 0
    failures: int = 0  # consecutive
    ejected_until: float = 0.0
    ejections: int = 0  # consecutive periods out; reset by a success


class Balancer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._health: dict[int, _Health] = {}
        self._turn = 0

    def _of(self, instance_id: int) -> _Health:
        health = self._health.get(instance_id)
        if health is None:
            health = self._health[instance_id] = _Health()
        return health

    def outstanding(self, instance_id: int) -> int:
        health = self._health.get(instance_id)
        return health.outstanding if health is not None else 0

    def order(self, endpoints: Sequence[E], key: Callable[[E], int]) -> list[E]:
        """`endpoints` in the order to try them: instances in service by fewest outstanding, then those
        taken out (soonest back first)."""
        if len(endpoints) < 2:
            return list(endpoints)
        now = self._clock()
        self._turn += 1
        count = len(endpoints)
        ranked = []
        for position, endpoint in enumerate(endpoints):
            health = self._health.get(key(endpoint))
            out = health is not None and health.ejected_until > now
            ranked.append(
                (
                    out,
                    health.ejected_until if out and health is not None else 0.0,
                    health.outstanding if health is not None else 0,
                    (position - self._turn) % count,  # equal loads: take turns
                    endpoint,
                )
            )
        ranked.sort(key=lambda row: row[:4])
        return [row[4] for row in ranked]

    def started(self, instance_id: int) -> None:
        self._of(instance_id).outstanding += 1

    def finished(self, instance_id: int) -> None:
        health = self._of(instance_id)
        health.outstanding = max(0, health.outstanding - 1)

    def succeeded(self, instance_id: int) -> None:
        health = self._health.get(instance_id)
        if health is not None and (health.failures or health.ejections):
            health.failures = 0
            health.ejections = 0
            health.ejected_until = 0.0

    def failed(self, instance_id: int, name: str) -> float:
        """Count a failure to answer; returns the seconds the instance is now out (0: still in)."""
        health = self._of(instance_id)
        health.failures += 1
        if health.failures < FAILURES_TO_EJECT:
            return 0.0
        seconds = min(MAX_EJECT_SECONDS, EJECT_SECONDS * 2**health.ejections)
        health.ejections += 1
        health.failures = 0
        health.ejected_until = self._clock() + seconds
        logger.info("instance %s failed %d times in a row; not sent requests for %.0fs", name,
                    FAILURES_TO_EJECT, seconds)  # fmt: skip
        return seconds

    def is_out(self, instance_id: int) -> bool:
        health = self._health.get(instance_id)
        return health is not None and health.ejected_until > self._clock()

    def forget(self, keep: AbstractSet[int]) -> None:
        """Drop what is known of instances that no longer run (their counts are not coming back)."""
        for instance_id in [i for i, h in self._health.items() if i not in keep and not h.outstanding]:
            del self._health[instance_id]
