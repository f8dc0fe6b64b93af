"""Runs one engine process per assigned instance and reports its progress to the server."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gpustack.backends.argv import has_flag, split_items
from gpustack.backends.base import ENGINE_HOST, Backend, Devices, Executable, FailureHint, Launch
from gpustack.backends.devices import visible_env
from gpustack.backends.errors import UnknownBackend
from gpustack.backends.registry import backend_of
from gpustack.config import Config
from gpustack.schemas.engine_settings import check_backend_parameters, check_environment
from gpustack.schemas.models import (
    ACTIVE_STATES,
    ModelInstanceState,
    ModelInstanceStateUpdate,
    ModelSpec,
    ResourceClaim,
    SourceEnum,
)
from gpustack.schemas.placement import PlacementDetail, PlacementMode
from gpustack.schemas.workers import GPUDevice
from gpustack.sources.base import SourceSettings
from gpustack.sources.registry import source_of
from gpustack.utils.engine_secret import engine_secret
from gpustack.utils.errors import describe_error
from gpustack.utils.network import port_is_free
from gpustack.worker.client import ServerClient, ServerError
from gpustack.worker.engines.inventory import Inventory
from gpustack.worker.engines.managed import InstallFailed
from gpustack.worker.engines.resolve import Directories, NotInstalled, resolve
from gpustack.worker.engines.run_files import run_dir, write_run_files
from gpustack.worker.files.manager import FileManager, FilesUnavailable
from gpustack.worker.process import (
    keep_previous_log,
    kill_group,
    open_private_log,
    start_logged,
    terminate,
)
from gpustack.worker.serve_ray import RayFailed, RayServing, ray_layout

logger = logging.getLogger(__name__)

STARTUP_DEADLINE_SECONDS = 600.0
LOG_LINES_IN_ERROR = 15
# An engine's root cause can be a traceback above its last lines (vLLM's engine core fails, then its API
# server's own traceback follows): its backend's hints are looked for this far back.
LINES_SEARCHED_FOR_HINTS = 400
# How soon a state the server has not taken in (a report lost while it was away) is sent again.
RESEND_AFTER_SECONDS = 3.0
# Loading takes seconds: health polls start fast and slow down, so that many engines loading at once do
# not cost the worker hundreds of requests a second.
HEALTH_POLL_FIRST_SECONDS = 0.25
HEALTH_POLL_MAX_SECONDS = 2.0
# Failures of the network, the server or the machine, which their message explains without a traceback.
_EXPECTED_FAILURES = (httpx.HTTPError, ServerError, OSError)


# Spellings that set the same thing as a source's parameter (a user's --no-mmproj also says no projector).
_SAME_AS = {
    "--mmproj": ("-mm", "--no-mmproj"),
    "--temp": ("--temperature",),
    "--n-predict": ("-n", "--predict"),
}


def with_source_parameters(
    spec: ModelSpec, parameters: list[str], flags: frozenset[str] = frozenset()
) -> ModelSpec:
    """The model with the engine parameters its source brings (`--flag value` pairs) before the user's own,
    leaving out those the user gives (what the user says wins) and, when the executable's flags are known,
    those it does not take."""
    user = split_items(spec.backend_parameters)
    added: list[str] = []
    for flag, value in zip(parameters[::2], parameters[1::2], strict=False):
        if flags and flag not in flags:
            continue
        if not has_flag(user, flag, *_SAME_AS.get(flag, ())):
            added += [flag, value]
    if not added:
        return spec
    return spec.model_copy(update={"backend_parameters": [*added, *spec.backend_parameters]})


def known_failure(hints: tuple[FailureHint, ...], lines: list[str]) -> str:
    """The engine's own line for a failure its backend knows, and the backend's advice: ': <line> (<advice>)';
    empty when none of its hints matches."""
    for hint in hints:
        for line in reversed(lines):
            if hint.pattern in line:
                said = line.split("] ", 1)[-1].strip() if "] " in line else line.strip()
                return f": {said[:500]} ({hint.advice})"
    return ""


def serve_log_path(log_dir: str, instance_id: int) -> Path:
    """<log-dir>/serve/<instance id>.log; the previous run's is kept beside it as .log.1."""
    return Path(log_dir) / "serve" / f"{instance_id}.log"


def _placement(instance: dict[str, Any]) -> PlacementDetail:
    """The placement as the scheduler typed it (instances placed by older servers are read the same)."""
    return PlacementDetail.model_validate(instance["placement"])


def _mode(instance: dict[str, Any], devices: Devices) -> PlacementMode:
    if instance.get("placement"):
        return _placement(instance).mode
    return PlacementMode.GPU if devices.indexes else PlacementMode.CPU


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file, reading backwards from its end only as far as needed."""
    if count <= 0:
        return []
    block = 64 * 1024
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            position = handle.tell()
            data = b""
            while position > 0 and data.count(b"\n") <= count:
                step = min(block, position)
                position -= step
                handle.seek(position)
                data = handle.read(step) + data
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-count:]


@dataclass
class RunningEngine:
    instance_id: int
    name: str
    task: asyncio.Task[None] | None = None
    process: asyncio.subprocess.Process | None = None
    port: int | None = None
    stopping: bool = False
    # The last state this worker decided for the instance, and when the server last answered a report.
    last_update: ModelInstanceStateUpdate | None = None
    last_sent_at: float = 0.0
    # One report in flight per instance: a slow server otherwise got a resend every few seconds on top
    # of the reports it had not answered yet, which slowed it further (bench/many_engines.py).
    delivery: asyncio.Lock = field(default_factory=asyncio.Lock)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None


class ServeManager:
    def __init__(
        self,
        config: Config,
        worker_id: Callable[[], int],
        client: ServerClient,
        devices: Callable[[], list[GPUDevice]],
        cluster_secret: str = "",
    ) -> None:
        self.config = config
        self._worker_id = worker_id
        self._client = client
        self._devices_now = devices
        self.inventory = Inventory(Directories.of(config.data_dir, config.bin_dir))  # for the status
        self.engines: dict[int, RunningEngine] = {}
        self._view: dict[int, dict[str, Any]] = {}
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()  # held so they are not garbage-collected mid-way
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(2.0))
        # Ray clusters of instances across workers (vLLM); their token derives from the cluster token.
        self.ray = RayServing(config, client, self._devices_of, cluster_secret)
        self.files = FileManager(config.cache_dir, SourceSettings.of(config), client)

    # ---- what the server wants

    def reconcile(self, instances: dict[int, dict[str, Any]]) -> None:
        """Make the running engines match the instances assigned to this worker, and the server's view of
        each instance match what its engine is really doing."""
        self._view = instances
        if self._closing:
            return
        self.ray.reconcile(instances, self._worker_id())
        for instance_id, engine in list(self.engines.items()):
            wanted = instances.get(instance_id)
            if wanted is None or wanted["worker_id"] != self._worker_id():
                self._stop(engine, "the instance was removed from this worker")
            elif wanted["state"] == ModelInstanceState.ERROR.value and engine.alive:
                self._stop(engine, "the server marked the instance as failed")
        for instance_id, instance in instances.items():
            state = ModelInstanceState(instance["state"])
            current = self.engines.get(instance_id)
            if state not in ACTIVE_STATES or instance["worker_id"] != self._worker_id():
                continue
            if current is not None and (current.alive or (current.task and not current.task.done())):
                self._resend_if_stale(current, state)
                continue
            if current is not None and state != ModelInstanceState.SCHEDULED and not current.stopping:
                # Our engine ended; the server decides when to restart it (state scheduled).
                self._resend_if_stale(current, state)
                continue
            if current is not None and current.stopping:
                continue  # started again once the old process is gone (see _terminate)
            self._start(instance)

    def claims(self) -> list[ResourceClaim]:
        """What the instances assigned here claim, for the status this worker reports: those it runs,
        and its share of those it lends GPUs to through its RPC servers."""
        me = self._worker_id()
        found = []
        for instance in self._view.values():
            if instance["worker_id"] == me and instance.get("computed_resource_claim"):
                found.append(ResourceClaim.model_validate(instance["computed_resource_claim"]))
            for part in instance.get("subordinate_workers") or []:
                if part["worker_id"] == me:
                    found.append(ResourceClaim.model_validate(part["claim"]))
        return found

    def _devices(self, instance: dict[str, Any]) -> Devices:
        """The GPUs the placement gives the engine, as this worker knows them."""
        return self._devices_of(instance["gpu_indexes"])

    def _devices_of(self, gpu_indexes: list[int]) -> Devices:
        devices = {device.index: device for device in self._devices_now()}
        assigned = [devices[index] for index in gpu_indexes if index in devices]
        if len(assigned) != len(gpu_indexes):
            raise RuntimeError(f"GPUs {gpu_indexes} were assigned, but this worker has {sorted(devices)}")
        types = {device.type.value for device in assigned}
        if len(types) > 1:
            raise RuntimeError(f"GPUs {gpu_indexes} are of different kinds ({', '.join(sorted(types))})")
        return Devices(
            gpu_type=types.pop() if types else None,
            indexes=tuple(gpu_indexes),
            visible_ids=tuple(device.visible_id or str(device.index) for device in assigned),
        )

    def resync(self) -> None:
        """Reconcile again against the last view: for the periodic check and after an engine stops."""
        self.reconcile(self._view)

    def _resend_if_stale(self, engine: RunningEngine, server_state: ModelInstanceState) -> None:
        """Send the engine's real state again if the server's differs (a report lost while it was away)."""
        update = engine.last_update
        if update is None or engine.stopping or server_state == ModelInstanceState.UNREACHABLE:
            return  # unreachable is the server's own judgement of this worker
        if update.state == server_state or time.monotonic() - engine.last_sent_at < RESEND_AFTER_SECONDS:
            return
        if engine.delivery.locked():
            return  # a report is on its way; its answer decides whether another is needed
        logger.info(
            "model instance %s: the server has %s, the engine is %s; reporting again",
            engine.name,
            server_state.value,
            update.state.value,
        )
        self._spawn(self._deliver(engine))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ports_in_use(self) -> set[int]:
        return {engine.port for engine in self.engines.values() if engine.port is not None}

    def engine_secret(self, instance_id: int) -> str | None:
        """What callers of this instance's engine present (None before the worker has registered)."""
        credential = self._client.credential
        return engine_secret(credential, instance_id) if credential else None

    def serves(self, instance_id: int, port: int) -> bool:
        """Whether this worker runs that instance's engine, alive, on that port."""
        engine = self.engines.get(instance_id)
        return engine is not None and engine.port == port and engine.alive

    # ---- lifecycle of one engine

    def _start(self, instance: dict[str, Any]) -> None:
        engine = RunningEngine(instance_id=instance["id"], name=instance["name"])
        self.engines[engine.instance_id] = engine
        engine.task = asyncio.create_task(self._run(engine, instance), name=f"engine-{engine.name}")

    def _stop(self, engine: RunningEngine, why: str) -> None:
        if engine.stopping:
            return
        engine.stopping = True
        logger.info("stopping model instance %s: %s", engine.name, why)
        self._spawn(self._terminate(engine))

    async def _terminate(self, engine: RunningEngine, grace: float = 10.0) -> None:
        await terminate(engine.process, grace)
        if engine.process is not None:
            kill_group(engine.process.pid)
        if engine.task is not None and not engine.task.done():
            engine.task.cancel()
        if self.engines.get(engine.instance_id) is engine:
            del self.engines[engine.instance_id]
            self.resync()  # a replacement may have been waiting for this one to go

    async def shutdown(self) -> None:
        self._closing = True
        for engine in list(self.engines.values()):
            engine.stopping = True
        await asyncio.gather(*(self._terminate(e, grace=5.0) for e in list(self.engines.values())))
        await self.ray.shutdown()
        await self.files.shutdown()
        await self._http.aclose()

    async def _send(
        self, engine: RunningEngine, state: ModelInstanceState, message: str = "", **fields: Any
    ) -> bool:
        """Report a state. False when the instance is no longer ours (deleted or moved): it then stops."""
        if engine.stopping:
            return False
        previous = engine.last_update
        # Port and pid stay known in later reports, so that a resent report carries them too.
        carried = {k: getattr(previous, k) for k in ("port", "pid", "resolved_path") if previous is not None}
        if state == ModelInstanceState.ERROR:
            carried.pop("pid", None)
        update = ModelInstanceStateUpdate(
            worker_id=self._worker_id(), state=state, state_message=message, **{**carried, **fields}
        )
        engine.last_update = update
        return await self._deliver(engine)

    async def _deliver(self, engine: RunningEngine) -> bool:
        """Send the instance's latest state, after any report still on its way (so none overtakes)."""
        async with engine.delivery:
            update = engine.last_update
            if update is None or engine.stopping:
                return not engine.stopping
            try:
                await self._client.report_instance(engine.instance_id, update)
            except Exception as exc:  # noqa: BLE001 - the server may be briefly away; resync sends it again
                status = getattr(exc, "status_code", None)
                if status in (404, 409):
                    self._stop(engine, f"the server no longer assigns it here ({exc})")
                    return False
                logger.warning(
                    "could not report %s for model instance %s (sent again in %.0fs): %s",
                    update.state.value,
                    engine.name,
                    RESEND_AFTER_SECONDS,
                    describe_error(exc),
                )
            finally:
                engine.last_sent_at = time.monotonic()
        return True

    async def _run(self, engine: RunningEngine, instance: dict[str, Any]) -> None:
        try:
            await self._run_engine(engine, instance)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            message = f"the worker failed to start the engine: {describe_error(exc)}"
            if isinstance(exc, _EXPECTED_FAILURES):
                logger.warning("model instance %s: %s", engine.name, message)  # no traceback: it says it all
            else:
                logger.exception("model instance %s: %s", engine.name, message)
            await self._send(engine, ModelInstanceState.ERROR, message)

    async def _fail(self, engine: RunningEngine, message: str) -> None:
        await self._send(engine, ModelInstanceState.ERROR, message)

    async def _run_engine(self, engine: RunningEngine, instance: dict[str, Any]) -> None:
        if not await self._send(engine, ModelInstanceState.INITIALIZING, "preparing the engine"):
            return
        spec = ModelSpec.model_validate(await self._client.get_model(instance["model_id"]))
        try:
            backend = backend_of(spec.backend)
        except UnknownBackend as exc:
            await self._fail(engine, f"this worker cannot run the model: {exc}; upgrade the worker")
            return
        try:
            check_backend_parameters(spec.backend_parameters)
            check_environment(spec.env)
            backend.check_spec(spec)
            options = backend.parse_options(spec.backend_parameters)
        except (ValueError, ArithmeticError) as exc:
            # Stored before the API checked them: say what to change rather than fail to exec forever.
            await self._fail(
                engine,
                f"the model's settings cannot start an engine: {exc}. Change them with "
                f"PUT /v2/models/{instance['model_id']}",
            )
            return
        resolved = await self._model_files(engine, instance, spec)
        if resolved is None:
            return
        path, source_parameters = resolved
        devices = self._devices(instance)
        log_path = serve_log_path(self.config.log_dir, engine.instance_id)
        await asyncio.to_thread(keep_previous_log, log_path)
        executable = await self._executable(engine, backend, spec, devices, log_path)
        if executable is None:
            return
        if source_parameters:  # what the source brings: a projector, sampling defaults, a chat template
            spec = with_source_parameters(spec, source_parameters, executable.flags)
            options = backend.parse_options(spec.backend_parameters)
        port = self._free_port()
        if port is None:
            low, high = self.config.service_port_range
            await self._fail(engine, f"no free port in --service-port-range {low}-{high}; widen it")
            return
        engine.port = port
        launch = Launch(
            model_name=instance["model_name"],
            model_path=path,
            port=port,
            executable=executable,
            mode=_mode(instance, devices),
            layout=_placement(instance).layout if instance.get("placement") else None,
            devices=devices,
            worker_ip=instance.get("worker_ip") or ENGINE_HOST,
            subordinate_ips=tuple(part["worker_ip"] for part in instance.get("subordinate_workers") or []),
            run_dir=str(run_dir(self.config.data_dir, engine.instance_id)),
            api_key=self.engine_secret(engine.instance_id) or "",
        )
        command = backend.command(spec, options, launch)
        await asyncio.to_thread(write_run_files, Path(launch.run_dir), command.files)
        ray_env = await self._ray_cluster(engine, instance, executable, devices)
        if ray_env is None:
            return
        visible = visible_env(devices)
        # The model's variables win over the backend's (VLLM_LOGGING_LEVEL=DEBUG); the devices it may see
        # are the placement's, whatever either says.
        env = {**os.environ, **command.env, **ray_env, **spec.env, **visible}
        logger.debug(
            "model instance %s: running %s with the model's variables %s and %s",
            engine.name,
            shlex.join(command.argv),
            sorted(spec.env) or "none",
            " ".join(f"{k}={v!r}" for k, v in visible.items()),
        )
        engine.process = await start_logged(command.argv, env, log_path)
        logger.info(
            "model instance %s: started %s %s (pid %d, port %d) from %s",
            engine.name,
            backend.name,
            executable.path,
            engine.process.pid,
            port,
            executable.origin,
        )
        if not await self._send(
            engine,
            ModelInstanceState.STARTING,
            "loading the model",
            port=port,
            pid=engine.process.pid,
            resolved_path=path or None,
        ):
            return
        exit_code = await self._wait_healthy(engine, backend.probe(spec, options).path)
        if exit_code is None:
            await self._send(engine, ModelInstanceState.RUNNING, "", port=port, pid=engine.process.pid)
            exit_code = await engine.process.wait()
        kill_group(engine.process.pid)  # what the engine left behind (vLLM's engine core, when killed)
        if engine.stopping:
            return
        tail = await asyncio.to_thread(tail_lines, log_path, LINES_SEARCHED_FOR_HINTS)
        lines = "\n".join(tail[-LOG_LINES_IN_ERROR:])
        logger.warning("model instance %s: engine exited with code %s", engine.name, exit_code)
        await self._fail(
            engine,
            f"the engine exited with code {exit_code}{known_failure(command.hints, tail)}. "
            f"Last lines of {log_path}:\n{lines}",
        )

    async def _ray_cluster(
        self, engine: RunningEngine, instance: dict[str, Any], executable: Executable, devices: Devices
    ) -> dict[str, str] | None:
        """The Ray cluster of an instance across workers, formed (or found) before its engine starts, and
        the variables its engine needs; {} for any other instance; None (the instance in error) if it
        cannot be formed."""
        if ray_layout(instance) is None:
            return {}

        async def progress(message: str) -> None:
            await self._send(engine, ModelInstanceState.INITIALIZING, message)

        try:
            return await self.ray.form(instance, executable, devices, progress)
        except RayFailed as exc:
            await self._fail(engine, str(exc))
            return None

    async def _model_files(
        self, engine: RunningEngine, instance: dict[str, Any], spec: ModelSpec
    ) -> tuple[str, list[str]] | None:
        """The path the engine loads, downloaded first when the model comes from a hub (progress in the
        instance's state), and the engine parameters its source brings; None (and the instance in error,
        saying why) when the files cannot be had."""
        if spec.source == SourceEnum.LOCAL_PATH:
            path = spec.local_path or ""
            if path and not await asyncio.to_thread(os.path.exists, path):
                await self._fail(
                    engine,
                    f"failed to load model: {path} does not exist on worker {instance['worker_name']}; "
                    "put the model at the same absolute path on every worker that may run it",
                )
                return None
            return path, []

        async def progress(message: str) -> None:
            await self._send(engine, ModelInstanceState.DOWNLOADING, message)

        what = source_of(spec.source).describe(spec)
        if not await self._send(engine, ModelInstanceState.DOWNLOADING, f"preparing the files of {what}"):
            return None
        try:
            manifest = await self.files.ensure(spec, instance["model_id"], progress)
        except FilesUnavailable as exc:
            await self._fail(engine, str(exc))
            return None
        return manifest.main, manifest.parameters

    async def _executable(
        self, engine: RunningEngine, backend: Backend[Any], spec: ModelSpec, devices: Devices, log_path: Path
    ) -> Executable | None:
        """What runs the backend version, installed first if needed with progress in the state message and
        pip's output in the instance's log; None (and the instance in error, saying why) when nothing can."""

        async def progress(message: str) -> None:
            await self._send(engine, ModelInstanceState.INITIALIZING, message)

        dirs = Directories.of(self.config.data_dir, self.config.bin_dir)
        try:
            log = await asyncio.to_thread(open_private_log, log_path)
            with log:
                executable = await resolve(backend, spec, dirs, devices.gpu_type, progress, log)
        except (NotInstalled, InstallFailed) as exc:
            logger.warning("model instance %s: %s", engine.name, str(exc).partition("\n")[0])
            await self._fail(engine, str(exc))
            return None
        self.inventory.changed()
        return executable

    async def _wait_healthy(self, engine: RunningEngine, probe_path: str) -> int | None:
        """None once the engine answers its readiness probe with 200; its exit code if it dies first.

        Past the startup deadline the engine is reported failed and stopped.
        """
        assert engine.process is not None
        url = f"http://{ENGINE_HOST}:{engine.port}{probe_path}"
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        interval = HEALTH_POLL_FIRST_SECONDS
        while time.monotonic() < deadline:
            if engine.process.returncode is not None:
                return engine.process.returncode
            try:
                response = await self._http.get(url)
                if response.status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            try:
                return await asyncio.wait_for(engine.process.wait(), interval)  # an exit is seen at once
            except asyncio.TimeoutError:
                interval = min(interval * 1.5, HEALTH_POLL_MAX_SECONDS)
        await self._send(
            engine,
            ModelInstanceState.ERROR,
            f"the engine did not become healthy within {STARTUP_DEADLINE_SECONDS:.0f}s",
        )
        self._stop(engine, "startup deadline passed")
        return -1

    def _free_port(self) -> int | None:
        low, high = self.config.service_port_range
        taken = self.ports_in_use()
        for port in range(low, high + 1):
            if port not in taken and port_is_free(port, "127.0.0.1") and port_is_free(port):
                return port
        return None
