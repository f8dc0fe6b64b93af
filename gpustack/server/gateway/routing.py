"""Where each model can be served right now, kept current from the event bus (no query per request)."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from gpustack.schemas.models import ModelInstancePublic, ModelInstanceState, ModelPublic
from gpustack.schemas.workers import WorkerPublic
from gpustack.server.bus import EventType
from gpustack.server.context import ServerContext
from gpustack.server.db.tables import ModelInstanceRow, ModelRow, WorkerRow

logger = logging.getLogger(__name__)

_TOPICS = (ModelRow.__tablename__, ModelInstanceRow.__tablename__, WorkerRow.__tablename__)
_ROUTED_FIELDS = {ModelRow.__tablename__: ("name",), WorkerRow.__tablename__: ("name", "ip", "port")}


@dataclass(frozen=True)
class Endpoint:
    instance_id: int
    instance_name: str
    worker_id: int
    worker_name: str
    worker_address: str  # http://ip:port of the worker's API
    engine_port: int


class RoutingTable:
    def __init__(self) -> None:
        self.models: dict[int, dict[str, Any]] = {}
        self._instances: dict[int, dict[str, Any]] = {}
        self._workers: dict[int, dict[str, Any]] = {}
        self._by_name: dict[str, list[Endpoint]] = {}
        self._model_names: dict[str, int] = {}
        self._turns: dict[str, itertools.count] = {}

    # ---- reads, on the request path

    def has_model(self, name: str) -> bool:
        return name in self._model_names

    def endpoints(self, name: str) -> list[Endpoint]:
        """Running endpoints of a model, rotated so that successive requests start at the next one."""
        endpoints = self._by_name.get(name, [])
        if len(endpoints) < 2:
            return endpoints
        start = next(self._turns.setdefault(name, itertools.count())) % len(endpoints)
        return endpoints[start:] + endpoints[:start]

    # ---- reads, for the metrics (at scrape time: the cluster's state without a query)

    def model_rows(self) -> list[dict[str, Any]]:
        return list(self.models.values())

    def instance_rows(self) -> list[dict[str, Any]]:
        return list(self._instances.values())

    def worker_rows(self) -> list[dict[str, Any]]:
        return list(self._workers.values())

    # ---- writes, from the bus

    def load(self, models: list[dict], instances: list[dict], workers: list[dict]) -> None:
        self.models = {m["id"]: m for m in models}
        self._instances = {i["id"]: i for i in instances}
        self._workers = {w["id"]: w for w in workers}
        self._rebuild()

    def apply(self, topic: str, kind: EventType, data: dict[str, Any]) -> None:
        table = {
            ModelRow.__tablename__: self.models,
            ModelInstanceRow.__tablename__: self._instances,
            WorkerRow.__tablename__: self._workers,
        }[topic]
        before = table.get(data["id"])
        if kind is EventType.DELETED:
            table.pop(data["id"], None)
        else:
            table[data["id"]] = data
        # Heartbeats update every worker every few seconds; only a change of what routing reads
        # (a worker's name and address, a model's name) is worth rebuilding the table for.
        if kind is EventType.UPDATED and topic != ModelInstanceRow.__tablename__ and before is not None:
            keys = _ROUTED_FIELDS[topic]
            if all(before.get(key) == data.get(key) for key in keys):
                return
        self._rebuild()

    def _rebuild(self) -> None:
        by_name: dict[str, list[Endpoint]] = {}
        for instance in self._instances.values():
            worker = self._workers.get(instance.get("worker_id") or -1)
            if (
                instance["state"] != ModelInstanceState.RUNNING.value
                or worker is None
                or not instance["port"]
            ):
                continue
            by_name.setdefault(instance["model_name"], []).append(
                Endpoint(
                    instance_id=instance["id"],
                    instance_name=instance["name"],
                    worker_id=worker["id"],
                    worker_name=worker["name"],
                    worker_address=f"http://{worker['ip']}:{worker['port']}",
                    engine_port=instance["port"],
                )
            )
        for endpoints in by_name.values():
            endpoints.sort(key=lambda e: e.instance_id)
        self._by_name = by_name
        self._model_names = {m["name"]: m["id"] for m in self.models.values()}


async def _load(ctx: ServerContext, table: RoutingTable) -> None:
    async with ctx.session() as session:
        models = (await session.execute(select(ModelRow))).scalars().all()
        instances = (await session.execute(select(ModelInstanceRow))).scalars().all()
        workers = (await session.execute(select(WorkerRow))).scalars().all()
    table.load(
        [ModelPublic.model_validate(m).model_dump(mode="json") | {"name": m.name} for m in models],
        [ModelInstancePublic.model_validate(i).model_dump(mode="json") for i in instances],
        [WorkerPublic.model_validate(w).model_dump(mode="json") for w in workers],
    )


async def maintain(ctx: ServerContext, table: RoutingTable, ready: asyncio.Event) -> None:
    """Keep `table` in step with the database for the life of the server."""
    while True:
        try:
            async with ctx.bus.subscribe(*_TOPICS) as subscription:
                await _load(ctx, table)  # after subscribing, so no change falls between load and events
                ready.set()
                while True:
                    event = await subscription.get()
                    if event is not None:
                        table.apply(event.topic, event.type, event.data)
        except OverflowError:
            logger.warning("gateway routing fell behind the event stream; reloading")
        except asyncio.CancelledError:
            raise
        except Exception:
            # A frozen table would route to stale engines until restart: reload instead.
            logger.exception("gateway routing failed; reloading in 1s")
            await asyncio.sleep(1.0)
