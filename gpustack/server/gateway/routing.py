"""Where each model can be served right now, and which OpenAI routes it serves, kept current from the
event bus (no query per request).

An instance is reached directly, server to engine, when its worker runs on this server's machine (the
engine listens on that machine's loopback); otherwise through its worker's proxy. Either way the request
carries the instance's engine secret (gpustack/utils/engine_secret.py), to the engine or to the proxy
that adds it."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import psutil
from sqlalchemy import select

from gpustack.backends.base import NOTHING_IGNORED, IgnoredFields
from gpustack.backends.errors import UnknownBackend
from gpustack.backends.registry import backend_of
from gpustack.schemas.models import ModelInstancePublic, ModelInstanceState, ModelPublic, ModelSpec
from gpustack.schemas.routes import OpenAIRoute
from gpustack.schemas.workers import WorkerPublic
from gpustack.server.bus import EventType
from gpustack.server.context import ServerContext
from gpustack.server.db.tables import ModelInstanceRow, ModelRow, WorkerRow
from gpustack.utils.engine_secret import engine_secret

logger = logging.getLogger(__name__)

_TOPICS = (ModelRow.__tablename__, ModelInstanceRow.__tablename__, WorkerRow.__tablename__)
_ROUTED_FIELDS = {
    ModelRow.__tablename__: ("name", "backend", "backend_parameters", "routes"),
    WorkerRow.__tablename__: ("name", "ip", "port"),
}
ENGINE_HOST = "127.0.0.1"  # where engines listen on their worker's machine (backends/base.py)


@dataclass(frozen=True)
class Endpoint:
    instance_id: int
    instance_name: str
    worker_id: int
    worker_name: str
    worker_address: str  # http://ip:port of the worker's API
    engine_port: int
    # Where the gateway connects, and what its request says besides the route: for a direct endpoint the
    # engine and its secret; otherwise the worker, its credential and the target engine.
    direct: bool = False
    host: str = ENGINE_HOST
    port: int = 0
    path_prefix: bytes = b"/v1/"
    headers: bytes = b""  # complete header lines, each ending in CRLF


@dataclass(frozen=True)
class ModelRoutes:
    """A deployed model as the gateway needs it: its name, backend and the routes that backend serves."""

    id: int
    name: str
    backend: str
    routes: frozenset[OpenAIRoute]
    # What its engine would ignore in a request (one shared empty mapping for most).
    ignored_fields: IgnoredFields = field(default_factory=lambda: NOTHING_IGNORED)

    def describe_routes(self) -> str:
        return ", ".join(sorted(f"/v1/{route.value}" for route in self.routes)) or "none"


def local_addresses() -> frozenset[str]:
    """Every address of this machine's interfaces: a worker reporting one of them runs here."""
    found = {"127.0.0.1", "::1", "localhost"}
    try:
        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(address.address.split("%", 1)[0])
    except OSError:
        pass
    return frozenset(found)


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return ip == "localhost"


def model_routes(model: dict[str, Any]) -> ModelRoutes:
    """The routes a model's backend serves for it, and what its engine would ignore, from the backend
    contract."""
    try:
        spec = ModelSpec.model_validate(model)
        backend = backend_of(spec.backend)
        routes = frozenset(backend.routes(spec, backend.parse_options(spec.backend_parameters)))
        return ModelRoutes(
            model["id"], model["name"], str(model.get("backend")), routes, backend.ignored_fields
        )
    except (UnknownBackend, ValueError, ArithmeticError) as exc:
        # Stored before a check that now refuses it: no route is better than a wrong one.
        logger.warning("model %s: cannot tell which routes it serves: %s", model.get("name"), exc)
        return ModelRoutes(model["id"], model["name"], str(model.get("backend")), frozenset())


class RoutingTable:
    def __init__(
        self,
        credential: Callable[[int], str] | None = None,
        local: frozenset[str] | None = None,
    ) -> None:
        self.models: dict[int, dict[str, Any]] = {}
        self._instances: dict[int, dict[str, Any]] = {}
        self._workers: dict[int, dict[str, Any]] = {}
        self._by_name: dict[str, list[Endpoint]] = {}  # what requests read: sorted by instance id
        # The same endpoints by model name and instance id, and each routed instance's model name: an
        # instance's change touches only its own model's list.
        self._routed: dict[str, dict[int, Endpoint]] = {}
        self._routed_name: dict[int, str] = {}
        self._model_names: dict[str, int] = {}
        self._routes: dict[str, ModelRoutes] = {}
        self._credential = credential
        self._route_keys: dict[tuple[Any, ...], ModelRoutes] = {}
        self._local = local if local is not None else local_addresses()
        # Told the ids of the instances still routed after each change (the balancer forgets the rest).
        self.on_rebuild: Callable[[AbstractSet[int]], None] | None = None

    # ---- reads, on the request path

    def has_model(self, name: str) -> bool:
        return name in self._model_names

    def model(self, name: str) -> ModelRoutes | None:
        return self._routes.get(name)

    def endpoints(self, name: str) -> list[Endpoint]:
        """Running endpoints of a model, by instance id (the balancer orders them per request)."""
        return self._by_name.get(name, [])

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
        if topic == ModelInstanceRow.__tablename__:
            # The busiest topic (every state report of 10,000 instances): only this instance's model's
            # endpoints are worked out again, not the whole table.
            self._route_instance(data["id"])
            self._told()
            return
        # Heartbeats update every worker every few seconds; only a change of what routing reads
        # (a worker's name and address, a model's name) is worth rebuilding the table for.
        if kind is EventType.UPDATED and before is not None:
            keys = _ROUTED_FIELDS[topic]
            if all(before.get(key) == data.get(key) for key in keys):
                return
        if topic == ModelRow.__tablename__ and kind is not EventType.DELETED:
            self._rebuild_models()
        else:
            self._rebuild()  # a worker moved or left, a model was deleted: rare, and touches many

    def _routable(self, instance: dict[str, Any] | None) -> dict[str, Any] | None:
        """The worker that serves `instance`, when it is running there on a known port."""
        if instance is None or instance["state"] != ModelInstanceState.RUNNING.value or not instance["port"]:
            return None
        return self._workers.get(instance.get("worker_id") or -1)

    def _route_instance(self, instance_id: int) -> None:
        old_name = self._routed_name.pop(instance_id, None)
        if old_name is not None:
            self._routed[old_name].pop(instance_id, None)
        instance = self._instances.get(instance_id)
        worker = self._routable(instance)
        new_name = self._add(instance, worker) if instance is not None and worker is not None else None
        for name in {old_name, new_name} - {None}:
            self._sort(str(name))

    def _add(self, instance: dict[str, Any], worker: dict[str, Any]) -> str:
        """Route `instance` through `worker` (unsorted); returns its model's name."""
        name = str(instance["model_name"])
        self._routed.setdefault(name, {})[instance["id"]] = self._endpoint(instance, worker)
        self._routed_name[instance["id"]] = name
        return name

    def _sort(self, name: str) -> None:
        routed = self._routed.get(name)
        if routed:
            self._by_name[name] = [routed[i] for i in sorted(routed)]
        else:
            self._routed.pop(name, None)
            self._by_name.pop(name, None)

    def _rebuild(self) -> None:
        self._routed, self._routed_name, self._by_name = {}, {}, {}
        for instance in self._instances.values():
            worker = self._routable(instance)
            if worker is not None:
                self._add(instance, worker)
        for name in list(self._routed):
            self._sort(name)
        self._rebuild_models()

    def _rebuild_models(self) -> None:
        self._model_names = {m["name"]: m["id"] for m in self.models.values()}
        # Routes depend on the backend's fields only: they are worked out again when those change.
        routes: dict[str, ModelRoutes] = {}
        by_key: dict[tuple[Any, ...], ModelRoutes] = {}
        for model in self.models.values():
            key = (
                model["id"],
                model["name"],
                str(model.get("backend")),
                tuple(model.get("backend_parameters") or ()),
                tuple(model.get("routes") or ()),
            )
            found = self._route_keys.get(key) or model_routes(model)
            routes[model["name"]] = by_key[key] = found
        self._routes = routes
        self._route_keys = by_key
        self._told()

    def _told(self) -> None:
        if self.on_rebuild is not None:
            self.on_rebuild(self._routed_name.keys())

    def _endpoint(self, instance: dict[str, Any], worker: dict[str, Any]) -> Endpoint:
        port = int(instance["port"])
        credential = self._credential(worker["id"]) if self._credential is not None else ""
        secret = engine_secret(credential, instance["id"]) if credential else ""
        direct = _is_loopback(worker["ip"]) or worker["ip"] in self._local
        common = dict(
            instance_id=instance["id"],
            instance_name=instance["name"],
            worker_id=worker["id"],
            worker_name=worker["name"],
            worker_address=f"http://{worker['ip']}:{worker['port']}",
            engine_port=port,
        )
        if direct:
            headers = f"Host: {ENGINE_HOST}:{port}\r\n"
            if secret:
                headers += f"Authorization: Bearer {secret}\r\n"
            return Endpoint(**common, direct=True, host=ENGINE_HOST, port=port, headers=headers.encode())
        host = str(worker["ip"])
        headers = (
            f"Host: {host}:{worker['port']}\r\nAuthorization: Bearer {credential}\r\n"
            f"X-Target-Port: {port}\r\nX-Target-Instance: {instance['id']}\r\n"
        )
        return Endpoint(
            **common, host=host, port=int(worker["port"]), path_prefix=b"/proxy/v1/", headers=headers.encode()
        )


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
