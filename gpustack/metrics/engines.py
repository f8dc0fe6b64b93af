"""Engine metrics passed through: each running engine's own /metrics (llama.cpp's server with --metrics,
vLLM always), labeled with the model and instance it serves and merged into the worker's scrape."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger(__name__)

# An engine without a metrics endpoint (llama.cpp's server without --metrics answers 501) is asked again
# only after this long.
RETRY_ABSENT_SECONDS = 60.0
SCRAPE_TIMEOUT_SECONDS = 2.0
ADDED_LABELS = ("worker", "model", "model_instance")


@dataclass(frozen=True)
class EngineProcess:
    """A running engine, as the metrics see it."""

    instance_id: int
    instance: str  # the model instance's name
    model: str
    pid: int | None
    port: int | None
    api_key: str | None = None  # the engine's secret (gpustack/utils/engine_secret.py)


def relabel(families: Sequence[Metric], added: dict[str, str]) -> list[Metric]:
    """`families` with `added` labels on every sample; a label the engine already uses keeps its value
    under `engine_<name>`."""
    result = []
    for family in families:
        copy = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            labels = {(f"engine_{k}" if k in added else k): v for k, v in sample.labels.items()}
            copy.add_sample(sample.name, {**labels, **added}, sample.value, sample.timestamp, sample.exemplar)
        result.append(copy)
    return result


def merge(per_engine: Sequence[Sequence[Metric]]) -> list[Metric]:
    """One family per name, holding every engine's samples (the text format allows a name once). An
    engine whose family has another type than the first engine's (another version) is left out."""
    merged: dict[str, Metric] = {}
    for families in per_engine:
        for family in families:
            kept = merged.get(family.name)
            if kept is None:
                merged[family.name] = family
            elif kept.type == family.type:
                kept.samples.extend(family.samples)
    return list(merged.values())


class EngineScraper:
    """Reads every engine's /metrics at scrape time, concurrently and with a short timeout."""

    def __init__(self) -> None:
        self._http = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_SECONDS)
        self._absent_until: dict[int, float] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _scrape(self, engine: EngineProcess) -> list[Metric] | None:
        if engine.port is None or self._absent_until.get(engine.instance_id, 0.0) > time.monotonic():
            return None
        try:
            headers = {"Authorization": f"Bearer {engine.api_key}"} if engine.api_key else None
            response = await self._http.get(f"http://127.0.0.1:{engine.port}/metrics", headers=headers)
        except httpx.HTTPError as exc:
            logger.debug("model instance %s: no engine metrics: %s", engine.instance, exc)
            return None
        if response.status_code != 200:
            # Not served (no --metrics): do not ask on every scrape.
            self._absent_until[engine.instance_id] = time.monotonic() + RETRY_ABSENT_SECONDS
            return None
        try:
            families = list(text_string_to_metric_families(response.text))
        except ValueError as exc:
            logger.debug("model instance %s: unreadable engine metrics: %s", engine.instance, exc)
            return None
        return families

    async def collect(self, worker: str, engines: Sequence[EngineProcess]) -> list[Metric]:
        results = await asyncio.gather(*(self._scrape(engine) for engine in engines))
        running = {engine.instance_id for engine in engines}
        for instance_id in list(self._absent_until):
            if instance_id not in running:
                del self._absent_until[instance_id]
        up = GaugeMetricFamily(
            "gpustack_engine_metrics_up",
            "1 when the engine's own /metrics answered and is passed through (llama.cpp's server needs "
            "the backend parameter --metrics), else 0.",
            labels=list(ADDED_LABELS),
        )
        relabeled = []
        for engine, families in zip(engines, results, strict=True):
            added = {"worker": worker, "model": engine.model, "model_instance": engine.instance}
            up.add_metric([worker, engine.model, engine.instance], 0 if families is None else 1)
            if families:
                relabeled.append(relabel(families, added))
        return [up, *merge(relabeled)]


class Families:
    """A fixed list of families, as prometheus_client's exposition wants a collector."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
