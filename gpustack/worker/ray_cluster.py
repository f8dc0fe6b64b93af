"""One Ray cluster per model instance that runs across workers (vLLM's Ray executor): its head on the main
worker at the port the scheduler gave it (ParallelLayout.ray_head_port), a worker node on each subordinate
worker, every node seeing only the GPUs the placement gives the instance on its worker.

The main worker forms the cluster before it starts vLLM (the instance says how many nodes have joined),
keeps it while the instance exists, so that an engine restart finds it formed, and tears it down when the
instance is deleted or moved. A subordinate worker joins while the instance lists it, and joins again if
its node dies (the head went away and came back).

Ports: the worker's --ray-port-range is cut into slots of PORTS_PER_NODE; the first half of the slots is
for heads (their first ports are what the worker offers the scheduler), the rest for worker nodes, so a
head the scheduler places here never meets a port a worker node of this machine already holds. Off
loopback every node, vLLM's driver and `ray status` need the cluster's token, derived from the cluster
token all workers share: another instance's nodes, or a stranger, cannot join.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpustack.utils.network import accepts, port_is_free
from gpustack.worker.ray import (
    PORTS_PER_NODE,
    RayNode,
    RayNodeSpec,
    RayPorts,
    RayRole,
    RayStartFailed,
    ray_log_path,
    vllm_driver_environment,
)

logger = logging.getLogger(__name__)

JOIN_TIMEOUT_SECONDS = 300.0  # how long the head waits for every node of the placement
REJOIN_DELAY_SECONDS = 5.0
OBJECT_STORE_BYTES = 256 * 1024**2  # vLLM's compiled graphs pass tensors over channels, not the object store
Progress = Callable[[str], Awaitable[None]]

# Run by the environment's Python with the driver's variables: waits until `want` nodes are alive,
# printing each new count (a driver, as vLLM's own will be: it proves the cluster takes drivers too).
WAIT_FOR_NODES = """
import sys, time
import ray
want, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
ray.init(logging_level="ERROR", log_to_driver=False)
seen = -1
while True:
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    if alive != seen:
        print(f"nodes {alive} {want}", flush=True)
        seen = alive
    if alive >= want:
        sys.exit(0)
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(1)
"""


class RayUnavailable(Exception):
    """Ray cannot run for this instance here (no Python with Ray, no free slot); the message says why."""


def slots(port_range: tuple[int, int]) -> list[int]:
    """The first port of each whole slot of PORTS_PER_NODE ports in the range."""
    low, high = port_range
    return list(range(low, high - PORTS_PER_NODE + 2, PORTS_PER_NODE))


def head_slots(port_range: tuple[int, int]) -> list[int]:
    found = slots(port_range)
    return found[: (len(found) + 1) // 2]


def node_slots(port_range: tuple[int, int]) -> list[int]:
    found = slots(port_range)
    return found[(len(found) + 1) // 2 :]


def cluster_token(secret: str, instance_id: int) -> str:
    """The Ray token of one instance's cluster: every worker computes it from the shared cluster token."""
    return hmac.new(secret.encode(), f"ray:{instance_id}".encode(), hashlib.sha256).hexdigest()


def temp_dir(base_port: int) -> Path:
    """Ray's session folder for the node on this slot: short (Ray's socket paths live under it), per user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"gst-ray-{uid}-{base_port}"


def ray_python(executable_path: str, is_python: bool) -> Path | None:
    """The Python of the environment vLLM runs from, if Ray can be run with it."""
    if is_python:
        return Path(executable_path)
    candidate = Path(os.path.realpath(executable_path)).with_name("python")  # a venv's bin/vllm
    return candidate if candidate.is_file() else None


@dataclass(frozen=True)
class NodeRequest:
    """A node of one instance's cluster on this worker."""

    instance_id: int
    python: Path
    node_ip: str
    num_gpus: int
    environment: Mapping[str, str]  # the GPUs it may use (*_VISIBLE_DEVICES), VLLM_HOST_IP


class RayClusters:
    def __init__(self, port_range: tuple[int, int], log_dir: str, secret: str) -> None:
        self.port_range = port_range
        self.log_dir = log_dir
        self.secret = secret
        self.heads: dict[int, RayNode] = {}
        self._joins: dict[int, asyncio.Task[None]] = {}
        self._nodes: dict[int, RayNode] = {}
        self._lock = asyncio.Lock()

    def head_ports(self) -> list[int]:
        return head_slots(self.port_range)

    def _spec(self, request: NodeRequest, role: RayRole, base: int, head: str | None) -> RayNodeSpec:
        return RayNodeSpec(
            role=role,
            node_ip=request.node_ip,
            temp_dir=temp_dir(base),
            log_path=ray_log_path(self.log_dir, role),
            ports=RayPorts(base),
            head_address=head,
            num_gpus=request.num_gpus,
            object_store_bytes=OBJECT_STORE_BYTES,
            auth_token=cluster_token(self.secret, request.instance_id),
            environment=dict(request.environment),
        )

    # ---- the main worker: the head

    async def head(
        self, request: NodeRequest, port: int, nodes: int, progress: Progress, subordinates: str
    ) -> dict[str, str]:
        """Start the instance's head at `port` (or find it running), wait until `nodes` nodes are in its
        cluster, and return the variables vLLM's driver needs. RayStartFailed or RayUnavailable with words
        a user can act on."""
        if port not in self.head_ports():
            raise RayUnavailable(
                f"the placement puts this instance's Ray head on port {port}, outside this worker's "
                f"--ray-port-range {self.port_range[0]}-{self.port_range[1]}; delete the instance to place "
                "it again"
            )
        async with self._lock:
            node = self.heads.get(request.instance_id)
            if node is None or not node.running or node.spec.ports.base != port:
                if node is not None:
                    await node.stop()
                node = RayNode(request.python, self._spec(request, RayRole.HEAD, port, None))
                self.heads[request.instance_id] = node
                await progress(f"starting the Ray head on {node.spec.address} (log {node.spec.log_path})")
                await node.start()
        env = vllm_driver_environment(node.spec)
        await self._wait_for_nodes(node, env, nodes, progress, subordinates)
        return env

    async def _wait_for_nodes(
        self, node: RayNode, env: dict[str, str], want: int, progress: Progress, subordinates: str
    ) -> None:
        process = await asyncio.create_subprocess_exec(
            str(node.python), "-c", WAIT_FOR_NODES, str(want), str(JOIN_TIMEOUT_SECONDS),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **env},
        )  # fmt: skip
        assert process.stdout is not None and process.stderr is not None
        errors = asyncio.ensure_future(process.stderr.read())
        try:
            async for raw in process.stdout:
                parts = raw.decode(errors="replace").split()
                if len(parts) == 3 and parts[0] == "nodes":
                    await progress(
                        f"forming the Ray cluster at {node.spec.address}: {parts[1]} of {parts[2]} nodes "
                        f"(waiting for {subordinates})"
                    )
            code = await process.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        stderr = (await errors).decode(errors="replace").strip().splitlines()[-5:]
        if code == 3:
            raise RayStartFailed(
                f"the Ray cluster at {node.spec.address} did not get its {want} nodes within "
                f"{JOIN_TIMEOUT_SECONDS:.0f} s: see ray-worker.log in the log dir of {subordinates}"
            )
        if code != 0:
            raise RayStartFailed(
                f"could not query the Ray cluster at {node.spec.address} (exit code {code}):\n"
                + "\n".join(stderr)
            )

    async def keep_heads(self, instance_ids: set[int]) -> None:
        """Stop the heads of instances this worker no longer runs (deleted, moved)."""
        async with self._lock:
            gone = [i for i in self.heads if i not in instance_ids]
            nodes = [self.heads.pop(i) for i in gone]
        for instance_id, node in zip(gone, nodes, strict=True):
            logger.info("stopping the Ray head of model instance %d: the instance is gone", instance_id)
            await node.stop()

    # ---- a subordinate worker: a worker node

    def joining(self) -> set[int]:
        return {i for i, task in self._joins.items() if not task.done()}

    def join(self, request: NodeRequest, head_address: str) -> None:
        """Keep a worker node of the instance's cluster running here until `leave` (in the background)."""
        task = self._joins.get(request.instance_id)
        if task is None or task.done():
            self._joins[request.instance_id] = asyncio.create_task(
                self._stay_joined(request, head_address), name=f"ray-join-{request.instance_id}"
            )

    async def leave(self, instance_id: int) -> None:
        task = self._joins.pop(instance_id, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _stay_joined(self, request: NodeRequest, head_address: str) -> None:
        host, _, port = head_address.rpartition(":")
        try:
            while True:
                if not await accepts(host, int(port)):  # the head is not up (yet, or again)
                    await asyncio.sleep(1.0)
                    continue
                base = self._free_node_slot(request.node_ip)
                if base is None:
                    low, high = self.port_range
                    logger.warning(
                        "model instance %d: no free Ray worker-node slot in --ray-port-range %d-%d; "
                        "retrying in %.0f s", request.instance_id, low, high, REJOIN_DELAY_SECONDS,
                    )  # fmt: skip
                    await asyncio.sleep(REJOIN_DELAY_SECONDS)
                    continue
                node = RayNode(request.python, self._spec(request, RayRole.WORKER, base, head_address))
                self._nodes[request.instance_id] = node
                try:
                    await node.start()
                    assert node.process is not None
                    code = await node.process.wait()
                    logger.warning(
                        "model instance %d: Ray worker node exited with code %s; joining %s again",
                        request.instance_id, code, head_address,
                    )  # fmt: skip
                except RayStartFailed as exc:
                    logger.warning("model instance %d: %s", request.instance_id, exc)
                finally:
                    await node.stop()
                    self._nodes.pop(request.instance_id, None)
                await asyncio.sleep(REJOIN_DELAY_SECONDS)
        except asyncio.CancelledError:
            joined = self._nodes.pop(request.instance_id, None)
            if joined is not None:
                await asyncio.shield(joined.stop())
            raise

    def _free_node_slot(self, ip: str) -> int | None:
        taken = {node.spec.ports.base for node in self._nodes.values()}
        for base in node_slots(self.port_range):
            if base in taken:
                continue
            if all(port_is_free(port, ip) for port in RayPorts(base).all()):
                return base
        return None

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.leave(i) for i in list(self._joins)))
        await self.keep_heads(set())
