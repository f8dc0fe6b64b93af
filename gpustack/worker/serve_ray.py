"""The Ray side of serving instances across workers (vLLM's Ray executor), for the ServeManager: the main
worker forms the instance's cluster before its engine starts and keeps it while the instance is its own;
a subordinate worker keeps a node in that cluster while the instance lists it (worker/ray_cluster.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gpustack.backends.base import Devices, Executable
from gpustack.backends.devices import visible_env
from gpustack.backends.registry import backend_of
from gpustack.config import Config
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import ParallelLayout, PlacementDetail
from gpustack.utils.errors import describe_error
from gpustack.worker.client import ServerClient
from gpustack.worker.engines.resolve import Directories, resolve
from gpustack.worker.process import open_private_log
from gpustack.worker.ray import RayRole, RayStartFailed, ray_log_path
from gpustack.worker.ray_cluster import NodeRequest, Progress, RayClusters, RayUnavailable, ray_python

logger = logging.getLogger(__name__)


class RayFailed(Exception):
    """The instance's Ray cluster could not be formed; the message says why, for the instance's state."""


def ray_layout(instance: dict[str, Any]) -> ParallelLayout | None:
    """The instance's parallel layout when it runs across workers through Ray."""
    if not instance.get("placement"):
        return None
    layout = PlacementDetail.model_validate(instance["placement"]).layout
    if isinstance(layout, ParallelLayout) and layout.ray_head_port and layout.workers > 1:
        return layout
    return None


def node_environment(devices: Devices, node_ip: str) -> dict[str, str]:
    """A node's variables: only the placement's GPUs visible, and vLLM's workers told their node's IP."""
    return {**visible_env(devices), "VLLM_HOST_IP": node_ip}


class RayServing:
    def __init__(
        self,
        config: Config,
        client: ServerClient,
        devices_of: Callable[[list[int]], Devices],
        secret: str,
    ) -> None:
        self.config = config
        self._client = client
        self._devices_of = devices_of
        self.clusters = RayClusters(config.ray_port_range, config.log_dir, secret)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wanted: set[int] = set()  # instances this worker serves part of, as last seen
        self._preparing: set[int] = set()  # of those, the ones whose Ray is being found or installed

    def head_ports(self) -> list[int]:
        return self.clusters.head_ports()

    # ---- the main worker

    async def form(
        self, instance: dict[str, Any], executable: Executable, devices: Devices, progress: Progress
    ) -> dict[str, str]:
        """Form the instance's cluster (or find it formed) and return vLLM's driver variables."""
        layout = ray_layout(instance)
        assert layout is not None and layout.ray_head_port is not None
        python = ray_python(executable.path, executable.python)
        if python is None:
            raise RayFailed(
                "vLLM across workers needs Ray from the Python environment vLLM runs in, and "
                f"{executable.path} is not inside one: use a managed version (backend_version) or a vLLM "
                "installed with Ray"
            )
        node_ip = instance.get("worker_ip") or "127.0.0.1"
        request = NodeRequest(
            instance["id"], python, node_ip, len(devices.indexes), node_environment(devices, node_ip)
        )
        others = ", ".join(part["worker_name"] for part in instance.get("subordinate_workers") or [])
        try:
            return await self.clusters.head(request, layout.ray_head_port, layout.workers, progress, others)
        except (RayStartFailed, RayUnavailable) as exc:
            raise RayFailed(str(exc)) from None

    # ---- every worker: what the instances in view want

    def reconcile(self, instances: dict[int, dict[str, Any]], me: int) -> None:
        """Keep the heads of instances this worker runs across workers, and a node in the cluster of each
        instance it serves part of; stop the rest."""
        heads = {i for i, inst in instances.items() if inst["worker_id"] == me and ray_layout(inst)}
        self._spawn(self.clusters.keep_heads(heads))
        parts: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for instance_id, instance in instances.items():
            if instance["worker_id"] == me or ray_layout(instance) is None:
                continue
            for part in instance.get("subordinate_workers") or []:
                if part["worker_id"] == me:
                    parts[instance_id] = (instance, part)
        self._wanted = set(parts)
        for instance_id in self.clusters.joining() - self._wanted:
            logger.info("model instance %d no longer uses this worker: leaving its Ray cluster", instance_id)
            self._spawn(self.clusters.leave(instance_id))
        for instance_id, (instance, part) in parts.items():
            if instance_id not in self.clusters.joining() and instance_id not in self._preparing:
                self._preparing.add(instance_id)
                self._spawn(self._join(instance, part))

    async def _join(self, instance: dict[str, Any], part: dict[str, Any]) -> None:
        try:
            await self._prepare_and_join(instance, part)
        finally:
            self._preparing.discard(instance["id"])

    async def _prepare_and_join(self, instance: dict[str, Any], part: dict[str, Any]) -> None:
        """Find Ray (installing vLLM's environment if needed), then keep a node in the cluster."""
        instance_id = instance["id"]
        try:
            spec = ModelSpec.model_validate(await self._client.get_model(instance["model_id"]))
            devices = self._devices_of(list(part["gpu_indexes"]))
            dirs = Directories.of(self.config.data_dir, self.config.bin_dir)
            log = await asyncio.to_thread(open_private_log, ray_log_path(self.config.log_dir, RayRole.WORKER))

            async def progress(message: str) -> None:
                logger.info("model instance %s, Ray worker node: %s", instance["name"], message)

            with log:
                backend = backend_of(spec.backend)
                executable = await resolve(backend, spec, dirs, devices.gpu_type, progress, log)
        except Exception as exc:  # noqa: BLE001 - logged; the main worker's wait reports the missing node
            logger.warning(
                "model instance %s: cannot join its Ray cluster: %s", instance["name"], describe_error(exc)
            )
            return
        python = ray_python(executable.path, executable.python)
        if python is None:
            logger.warning(
                "model instance %s: no Python with Ray beside %s", instance["name"], executable.path
            )
            return
        assert (layout := ray_layout(instance)) is not None
        node_ip = part["worker_ip"]
        request = NodeRequest(
            instance_id, python, node_ip, len(devices.indexes), node_environment(devices, node_ip)
        )
        if instance_id not in self._wanted:
            return  # the instance went while Ray was being prepared
        head = f"{instance['worker_ip']}:{layout.ray_head_port}"
        logger.info("model instance %s: joining its Ray cluster at %s", instance["name"], head)
        self.clusters.join(request, head)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.clusters.shutdown()
