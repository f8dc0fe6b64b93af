"""Where the server's metrics come from outside the gateway: database statements and the event bus."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from gpustack.metrics.server import ServerMetrics
from gpustack.server.bus import EventBus

_OPERATIONS = ("select", "insert", "update", "delete")
_STARTED = "gpustack_metrics_started"


def _operation(statement: str) -> str:
    word = statement.lstrip()[:6].lower()
    return word if word in _OPERATIONS else "other"


def time_database(engine: AsyncEngine, metrics: ServerMetrics) -> None:
    """Time every statement `engine` runs (cursor events: what the driver itself spends)."""
    children = {name: metrics.db_queries.labels(name) for name in (*_OPERATIONS, "other")}

    def before(
        _conn: Any, _cursor: Any, _statement: str, _parameters: Any, context: Any, _many: bool
    ) -> None:
        if context is not None:
            setattr(context, _STARTED, time.perf_counter())

    def after(_conn: Any, _cursor: Any, statement: str, _parameters: Any, context: Any, _many: bool) -> None:
        started = getattr(context, _STARTED, None)
        if started is not None:
            children[_operation(statement)].observe(time.perf_counter() - started)

    def failed(_context: Any) -> None:
        metrics.db_errors.inc()

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)
    event.listen(engine.sync_engine, "handle_error", failed)
    pool = engine.sync_engine.pool
    if hasattr(pool, "checkedout"):
        metrics.gauge(
            "gpustack_db_pool_connections_in_use",
            "Database connections this server has checked out of its pool.",
            lambda: float(pool.checkedout()),
        )


class _BusMeter:
    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._published: dict[str, Any] = {}
        self._delay: dict[str, Any] = {}

    def published(self, topic: str) -> None:
        child = self._published.get(topic)
        if child is None:
            child = self._published[topic] = self._metrics.bus_published.labels(topic)
        child.inc()

    def delivered(self, topic: str, delay: float) -> None:
        child = self._delay.get(topic)
        if child is None:
            child = self._delay[topic] = self._metrics.bus_delay.labels(topic)
        child.observe(delay)

    def overflowed(self) -> None:
        self._metrics.bus_overflows.inc()


def time_bus(bus: EventBus, metrics: ServerMetrics) -> None:
    bus.observer = _BusMeter(metrics)
    metrics.gauge(
        "gpustack_event_bus_subscribers",
        "Subscribers of the event bus (watch streams, caches, controllers).",
        lambda: float(bus.subscriber_count),
    )
