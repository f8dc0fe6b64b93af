"""The server's metrics: the gateway's, the cluster's state, the scheduler, the database and the event bus.

With several servers on one database every server exposes the cluster's state (instances and workers by
state) alike, from its own event-fed view, and only its own traffic and work: a dashboard sums the
per-server counters and takes the max of the cluster gauges."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from gpustack import __version__
from gpustack.metrics.gateway import GatewayMetrics
from gpustack.schemas.models import ModelInstanceState
from gpustack.schemas.workers import WorkerState

FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Scheduling outcomes, as the `outcome` label says them.
PLACED = "placed"
NO_FIT = "no_fit"
ESTIMATE_FAILED = "estimate_failed"


class ClusterView(Protocol):
    """What the server already keeps current from the event bus (the gateway's routing table)."""

    def model_rows(self) -> Iterable[dict[str, Any]]: ...

    def instance_rows(self) -> Iterable[dict[str, Any]]: ...

    def worker_rows(self) -> Iterable[dict[str, Any]]: ...


class _ClusterCollector:
    """Models, instances and workers by state, counted at scrape time from the in-memory view."""

    def __init__(self) -> None:
        self.view: ClusterView | None = None

    def collect(self) -> Iterator[Metric]:
        instances = GaugeMetricFamily(
            "gpustack_model_instances",
            "Model instances by model and state (every state is listed, zeros included).",
            labels=["model", "state"],
        )
        replicas = GaugeMetricFamily(
            "gpustack_model_replicas", "Replicas each model asks for.", labels=["model"]
        )
        ready = GaugeMetricFamily(
            "gpustack_model_ready_replicas", "Instances of each model that are running.", labels=["model"]
        )
        workers = GaugeMetricFamily(
            "gpustack_workers", "Workers by state (every state is listed).", labels=["state"]
        )
        view = self.view
        if view is not None:
            by_model = Tally((i["model_name"], i["state"]) for i in view.instance_rows())
            names = {name for name, _ in by_model}
            for model in view.model_rows():
                names.add(model["name"])
                replicas.add_metric([model["name"]], model.get("replicas", 0))
                ready.add_metric([model["name"]], model.get("ready_replicas", 0))
            for name in sorted(names):
                for state in ModelInstanceState:
                    instances.add_metric([name, state.value], by_model.get((name, state.value), 0))
            by_state = Tally(w["state"] for w in view.worker_rows())
            for worker_state in WorkerState:
                workers.add_metric([worker_state.value], by_state.get(worker_state.value, 0))
        yield from (instances, replicas, ready, workers)


class _GaugeCallback:
    """One gauge whose value is read when scraped."""

    def __init__(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        self.name = name
        self.documentation = documentation
        self.read = read

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.documentation)
        value = self.read()
        if value is not None:
            family.add_metric([], value)
        yield family


class ServerMetrics:
    """Every metric of one server, in its own registry."""

    def __init__(self) -> None:
        disable_created_metrics()  # *_created series double the scrape for nothing a dashboard uses
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        info = GaugeMetricFamily(
            "gpustack_build_info", "Version of this gpustack process.", labels=["version", "role"]
        )
        info.add_metric([__version__, "server"], 1)
        self.registry.register(_Static([info]))
        self.gateway = GatewayMetrics(self.registry)
        self._cluster = _ClusterCollector()
        self.registry.register(self._cluster)
        self.scheduling_decisions = Counter(
            "gpustack_scheduler_decisions",
            "Placement decisions for pending instances, by outcome: placed, no_fit (stays pending, with "
            "the reasons in its state message), estimate_failed.",
            ["outcome"],
            registry=self.registry,
        )
        self.scheduling_duration = Histogram(
            "gpustack_scheduler_round_duration_seconds",
            "Time of a scheduling round that found pending instances (snapshot, placement, commit).",
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        for outcome in (PLACED, NO_FIT, ESTIMATE_FAILED):
            self.scheduling_decisions.labels(outcome)
        self.db_queries = Histogram(
            "gpustack_db_query_duration_seconds",
            "Time of each database statement, by operation (select, insert, update, delete, other).",
            ["operation"],
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.db_errors = Counter(
            "gpustack_db_errors",
            "Database statements that failed.",
            registry=self.registry,
        )
        self.bus_published = Counter(
            "gpustack_event_bus_events",
            "Changes published on the event bus, by topic (table).",
            ["topic"],
            registry=self.registry,
        )
        self.bus_delay = Histogram(
            "gpustack_event_bus_delivery_delay_seconds",
            "Time from publishing an event to a subscriber taking it, by topic.",
            ["topic"],
            buckets=FAST_BUCKETS,
            registry=self.registry,
        )
        self.bus_overflows = Counter(
            "gpustack_event_bus_overflows",
            "Subscribers that fell behind the event stream and had to reload.",
            registry=self.registry,
        )

    def watch_cluster(self, view: ClusterView) -> None:
        self._cluster.view = view

    def gauge(self, name: str, documentation: str, read: Callable[[], float | None]) -> None:
        """Add a gauge read at scrape time (pool connections, bus subscribers, ...)."""
        self.registry.register(_GaugeCallback(name, documentation, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Static:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
