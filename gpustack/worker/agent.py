"""A running worker: its identity, registration, heartbeats, the watch on its assignments, and its API."""

from __future__ import annotations

import asyncio
import logging
import platform
import socket
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

from gpustack import __version__
from gpustack.config import Config
from gpustack.metrics.engines import EngineProcess
from gpustack.metrics.worker import WorkerMetrics
from gpustack.metrics.worker_app import AdminKeys, MetricsListener
from gpustack.schemas.workers import WorkerRegistered, WorkerRegistration, WorkerStatusReport
from gpustack.utils.errors import describe_error
from gpustack.utils.files import read_or_create, write_private
from gpustack.utils.network import first_non_loopback_ip
from gpustack.utils.uvicorn_server import bind_socket, make_server
from gpustack.utils.versions import check as check_versions
from gpustack.worker.api import create_worker_app
from gpustack.worker.client import ServerClient, ServerError
from gpustack.worker.detect import GPUDetection, combine, default_detectors, detect_gpus
from gpustack.worker.detect.system import detect_system
from gpustack.worker.rpc import RpcServers
from gpustack.worker.serve import ServeManager

logger = logging.getLogger(__name__)

RESYNC_SECONDS = 5.0
DETECT_SECONDS = 10.0
_ARCH_LABELS = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def worker_name_for(config: Config) -> str:
    """--worker-name, else the name kept in the data dir, else the hostname. Reads only."""
    if config.worker_name:
        return config.worker_name
    try:
        return (Path(config.data_dir) / "worker_name").read_text().strip() or socket.gethostname()
    except OSError:
        return socket.gethostname()


def worker_identity(config: Config) -> tuple[str, str]:
    """(name, uuid), kept in the data dir so that a restart (or a new hostname) is the same worker."""
    data = Path(config.data_dir)
    identifier = read_or_create(data / "worker_uuid", lambda: uuid.uuid4().hex)
    name = worker_name_for(config)
    if config.worker_name:
        write_private(data / "worker_name", name)
    else:
        read_or_create(data / "worker_name", lambda: name)
    return name, identifier


async def _sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `stop` is set; True when stopped."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except asyncio.TimeoutError:
        return False
    return True


def builtin_labels(name: str) -> dict[str, str]:
    machine = platform.machine().lower()
    return {"os": platform.system().lower(), "arch": _ARCH_LABELS.get(machine, machine), "worker-name": name}


class Worker:
    def __init__(self, config: Config, server_url: str | Sequence[str], token: str) -> None:
        self.config = config
        self.token = token
        self.name, self.uuid = worker_identity(config)
        self.ip = config.worker_ip or first_non_loopback_ip()
        self.worker_id: int | None = None
        # The embedded worker reaches its own server on loopback, whose certificate names the host
        # the users reach, not 127.0.0.1: nothing leaves the machine, so that one check is skipped.
        embedded = config.is_server
        # Several URLs: servers of one cluster, used in turn when one cannot be reached.
        self.client = ServerClient(server_url, token, verify=not embedded)
        self.detectors = default_detectors()
        # The latest GPU detection: vendor tools can be slow or hang, so they run on their own loop and
        # heartbeats report the last result instead of waiting for them.
        self.detection = GPUDetection()
        self._detected = asyncio.Event()
        self.rpc_servers = RpcServers(config, lambda: self.detection.devices, self.ip)
        self.serve = ServeManager(
            config, self._current_id, self.client, lambda: self.detection.devices, cluster_secret=token
        )
        # The instances the server assigns here, as last watched (the metrics name each engine's model).
        self.assigned: dict[int, dict] = {}

    @property
    def server_url(self) -> str:
        """The server this worker talks to now."""
        return self.client.server_url

    def _current_id(self) -> int:
        return self.worker_id or -1

    async def _detect_once(self) -> None:
        found = await asyncio.to_thread(detect_gpus, self.detectors)
        detection = combine(self.name, found, self.config.resources)
        if detection.errors != self.detection.errors:
            if detection.errors:
                logger.warning("GPU detection failed: %s", "; ".join(detection.errors))
            elif self._detected.is_set():
                logger.info("GPU detection works again")
        if [d.id for d in detection.devices] != [
            d.id for d in self.detection.devices
        ] or not self._detected.is_set():
            logger.info("GPUs: %s", ", ".join(f"{d.id} ({d.name})" for d in detection.devices) or "none")
        self.detection = detection
        self._detected.set()

    async def _detect_forever(self, stop: asyncio.Event) -> None:
        while not await _sleep_unless_stopped(stop, max(self.config.heartbeat_interval, DETECT_SECONDS)):
            try:
                await self._detect_once()
            except Exception:
                logger.exception("GPU detection loop failed; trying again")

    async def _status(self) -> WorkerStatusReport:
        status = await asyncio.to_thread(detect_system)
        detection = self.detection
        status.gpu_devices = [device.model_copy(deep=True) for device in detection.devices]
        claims = self.serve.claims()
        status.memory.allocated = sum(claim.ram for claim in claims)
        for device in status.gpu_devices:
            device.memory.allocated = sum(claim.vram.get(device.index, 0) for claim in claims)
        status.rpc_servers = self.rpc_servers.ports()
        status.ray_head_ports = self.serve.ray.head_ports()
        gpu_type = detection.devices[0].type.value if detection.devices else None
        status.backends = await self.serve.inventory.current(gpu_type)
        if detection.errors:
            message = "GPU detection failed: " + "; ".join(detection.errors)
            return WorkerStatusReport(status=status, state_message=message, healthy=False)
        return WorkerStatusReport(status=status)

    async def _register(self, stop: asyncio.Event) -> WorkerRegistered | None:
        delay = 1.0
        while not stop.is_set():
            if not self._detected.is_set():
                await self._detect_once()
            report = await self._status()
            registration = WorkerRegistration(
                name=self.name,
                uuid=self.uuid,
                hostname=socket.gethostname(),
                ip=self.ip,
                port=self.config.worker_port,
                labels={**builtin_labels(self.name), **self.config.worker_labels},
                system_reserved=self.config.system_reserved,
                heartbeat_interval=self.config.heartbeat_interval,
                status=report.status,
                healthy=report.healthy,
                state_message=report.state_message,
                version=__version__,
            )
            try:
                worker = await self.client.register(registration)
            except (httpx.HTTPError, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.status_code == 409:
                    # Refused for its version: retrying soon changes nothing until someone upgrades.
                    logger.error("%s refuses this worker: %s; retrying in 60s", self.server_url, exc)
                    await _sleep_unless_stopped(stop, 60.0)
                    continue
                logger.warning(
                    "cannot register with %s yet: %s; retrying in %.0fs",
                    self.server_url,
                    describe_error(exc),
                    delay,
                )
                await _sleep_unless_stopped(stop, delay)
                delay = min(delay * 2, 10.0)
                continue
            if worker.name != self.name:
                logger.warning(
                    "another machine already uses the worker name %r; this one is registered as %r "
                    "(choose a name with --worker-name)",
                    self.name,
                    worker.name,
                )
                self.name = worker.name
            self.worker_id = worker.id
            logger.info("registered as worker %s (id %d) with %s", worker.name, worker.id, self.server_url)
            versions = check_versions(worker.server_version or "unknown", __version__, "this worker")
            if versions.message:
                logger.warning("%s", versions.message)
            return worker
        return None

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not await _sleep_unless_stopped(stop, self.config.heartbeat_interval):
            try:
                await self.client.report_status(self._current_id(), await self._status())
            except ServerError as exc:
                # 404: the worker was removed; 401: its credential no longer holds (removed, or the
                # server's secret changed). Either way the cluster token gets a new registration.
                if exc.status_code in (401, 404):
                    logger.warning("the server no longer knows this worker (%s); registering again", exc)
                    await self._register(stop)
                else:
                    logger.warning("heartbeat rejected: %s", exc)
            except httpx.HTTPError as exc:
                logger.warning("heartbeat to %s failed: %s", self.server_url, describe_error(exc))
            except Exception:
                # A heartbeat loop that died would take every instance of this worker with it.
                logger.exception("heartbeat failed unexpectedly; trying again at the next interval")

    async def _watch(self, stop: asyncio.Event) -> None:
        delay = 1.0
        while not stop.is_set():
            watched_id = self._current_id()
            view: dict[int, dict] = {}
            try:
                async for event in self.client.watch_instances(watched_id):
                    if self._current_id() != watched_id:
                        break  # registered again under a new id: watch that one
                    kind = event["type"]
                    if kind == "snapshot":
                        view = {item["id"]: item for item in event["items"]}
                    elif kind in ("created", "updated"):
                        view[event["data"]["id"]] = event["data"]
                    elif kind == "deleted":
                        view.pop(event["data"]["id"], None)
                    else:
                        continue
                    delay = 1.0
                    self.serve.reconcile(view)
                    self.assigned = view
            except (httpx.HTTPError, ServerError, ValueError) as exc:
                # The error names the server that failed; the client may have moved on to another.
                logger.warning(
                    "watch interrupted: %s; reconnecting to %s in %.0fs",
                    describe_error(exc),
                    self.server_url,
                    delay,
                )
            except Exception:
                logger.exception("watch failed unexpectedly; reconnecting in %.0fs", delay)
            await _sleep_unless_stopped(stop, delay)
            delay = min(delay * 2, 10.0)

    async def _resync(self, stop: asyncio.Event) -> None:
        """Between watch events, keep checking engines against the server's view (lost reports, exits)."""
        while not await _sleep_unless_stopped(stop, RESYNC_SECONDS):
            try:
                self.serve.resync()
            except Exception:
                logger.exception("resync of engines failed; trying again")

    def engine_processes(self) -> list[EngineProcess]:
        """The engines this worker runs, for the metrics."""
        found = []
        for instance_id, engine in list(self.serve.engines.items()):
            process = engine.process
            found.append(
                EngineProcess(
                    instance_id=instance_id,
                    instance=engine.name,
                    model=str(self.assigned.get(instance_id, {}).get("model_name", "")),
                    pid=process.pid if process is not None and process.returncode is None else None,
                    port=engine.port,
                    api_key=self.serve.engine_secret(instance_id),
                )
            )
        return found

    def _serve_metrics(self) -> MetricsListener | None:
        if self.config.disable_metrics:
            return None
        metrics = WorkerMetrics(
            lambda: self.name,
            lambda: self.detection.devices,
            self.engine_processes,
            self.serve.files.in_progress,
        )
        keys = AdminKeys(self.server_url, verify=not self.config.is_server)
        port, token = self.config.worker_metrics_port, self.config.metrics_token
        return MetricsListener.start(port, token, metrics, keys)

    async def run(self, stop: asyncio.Event) -> None:
        sock = bind_socket("0.0.0.0", self.config.worker_port, "--worker-port")
        app = create_worker_app(lambda: self.client.credential, self.serve, self.config.log_dir)
        server = make_server(app)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="worker-http")
        logger.info("worker API listening on port %d", self.config.worker_port)
        metrics = self._serve_metrics()
        tasks: list[asyncio.Task] = []
        try:
            if await self._register(stop) is not None:
                tasks = [
                    asyncio.create_task(self._heartbeats(stop), name="heartbeats"),
                    asyncio.create_task(self._watch(stop), name="watch"),
                    asyncio.create_task(self._resync(stop), name="resync"),
                    asyncio.create_task(self._detect_forever(stop), name="detect"),
                    asyncio.create_task(self.rpc_servers.run(stop), name="rpc-servers"),
                ]
                await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.serve.shutdown()
            server.should_exit = True
            await serving
            if metrics is not None:
                await metrics.stop()
            await self.client.aclose()
