"""Ray nodes for vLLM across workers: the head beside the main worker, a worker node on each subordinate
worker, each a `ray start --block` child of the gpustack worker, logged to <log-dir>/ray-head.log or
<log-dir>/ray-worker.log, on ports counted up from 40096, and gone when stopped.

What Ray allows (2.58, read in its gRPC server and CLI, and seen here):
- Ray's servers listen on 127.0.0.1 only when the node's IP is exactly 127.0.0.1; for any other IP
  they listen on every interface (0.0.0.0), whatever --node-ip-address says. Binding to one worker IP
  is not possible, so off loopback the cluster is closed with Ray's token authentication instead
  (RAY_AUTH_MODE=token: a node, driver or CLI without the token is refused).
- Ray keeps a node on 127.0.0.1 only with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (otherwise it swaps
  127.0.0.1 for the host's address); but in that mode its CLI refuses to join a second node. A worker
  node on loopback (tests, or a cluster of gpustack workers on one machine) is therefore started
  through a few lines that lift that refusal (LOOPBACK_JOIN); everything else is plain `ray start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from gpustack.utils.network import accepts
from gpustack.worker.process import start_logged, terminate

logger = logging.getLogger(__name__)

RAY_PORT_BASE = 40096
WORKER_PROCESS_PORTS = 16  # one per Ray worker process (vLLM's workers are actors)
PORTS_PER_NODE = 10 + WORKER_PROCESS_PORTS
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 35.0  # Ray drains a node for up to 30 s on SIGTERM
# Unix socket paths are at most 107 bytes, and Ray puts them ~65 characters deep in its temp dir.
MAX_TEMP_DIR_CHARS = 40
LOG_LINES_IN_ERROR = 20

# Ray's CLI, run by the Python of the environment Ray is installed in (console scripts name their
# interpreter by absolute path, which a moved or shared environment breaks; the Python does not).
RAY_CLI = "import sys\nfrom ray.scripts.scripts import main\nsys.argv[0] = 'ray'\nmain()\n"
# The same for a node joining a head on loopback: Ray's CLI refuses to join while cluster mode is off,
# and with it on, it replaces 127.0.0.1 with the host's address.
LOOPBACK_JOIN = (
    "import sys\n"
    "import ray._private.ray_constants as constants\n"
    "import ray._private.services as services\n"
    "constants.ENABLE_RAY_CLUSTER = True\n"
    "services.resolve_ip_for_localhost = lambda host: host\n"
    "from ray.scripts.scripts import main\n"
    "sys.argv[0] = 'ray'\n"
    "main()\n"
)


class RayRole(str, Enum):
    HEAD = "head"
    WORKER = "worker"


class RayStartFailed(Exception):
    """A Ray node did not come up; the message quotes the last lines of its log."""


@dataclass(frozen=True)
class RayPorts:
    """A node's ports, consecutive from `base`: every port Ray would otherwise pick for itself."""

    base: int = RAY_PORT_BASE

    @property
    def gcs(self) -> int:
        return self.base

    @property
    def client_server(self) -> int:
        return self.base + 1

    @property
    def node_manager(self) -> int:
        return self.base + 2

    @property
    def object_manager(self) -> int:
        return self.base + 3

    @property
    def dashboard_agent_grpc(self) -> int:
        return self.base + 4

    @property
    def dashboard_agent_listen(self) -> int:
        return self.base + 5

    @property
    def metrics_export(self) -> int:
        return self.base + 6

    @property
    def runtime_env_agent(self) -> int:
        return self.base + 7

    @property
    def autoscaler_metrics(self) -> int:
        return self.base + 8  # Ray's default, 44217, is one fixed port per machine

    @property
    def dashboard_metrics(self) -> int:
        return self.base + 9  # Ray's default: 44227

    @property
    def min_worker(self) -> int:
        return self.base + 10

    @property
    def max_worker(self) -> int:
        return self.base + PORTS_PER_NODE - 1

    def all(self) -> range:
        return range(self.base, self.base + PORTS_PER_NODE)


@dataclass(frozen=True)
class RayNodeSpec:
    role: RayRole
    node_ip: str
    temp_dir: Path
    log_path: Path
    ports: RayPorts = RayPorts()
    head_address: str | None = None  # "<ip>:<gcs port>", for a worker node
    num_cpus: int | None = None  # Ray's default: every core
    num_gpus: int = 0
    object_store_bytes: int | None = None  # Ray's default: 30 % of memory
    auth_token: str | None = None
    # More variables for the node and the processes it starts (vLLM's workers): the devices it may use.
    environment: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.node_ip)  # ValueError names the bad address
        if self.role is RayRole.WORKER and not self.head_address:
            raise ValueError("a Ray worker node needs the head's address (<ip>:<port>)")
        if len(str(self.temp_dir)) > MAX_TEMP_DIR_CHARS:
            raise ValueError(
                f"Ray's temp dir {self.temp_dir} is longer than {MAX_TEMP_DIR_CHARS} characters: Ray's "
                "socket paths under it would pass the 107-byte limit; choose a shorter folder"
            )
        if self.auth_token is not None and len(self.auth_token) < 32:
            raise ValueError("a Ray auth token needs at least 32 characters")

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.node_ip).is_loopback

    @property
    def address(self) -> str:
        """The cluster's address (the head's GCS), for worker nodes and vLLM's RAY_ADDRESS."""
        if self.role is RayRole.HEAD:
            return f"{self.node_ip}:{self.ports.gcs}"
        assert self.head_address is not None
        return self.head_address

    @property
    def ready_port(self) -> int:
        """Listening once the node is up: the head's GCS, or a worker node's raylet (which opens only
        after the head accepted it)."""
        return self.ports.gcs if self.role is RayRole.HEAD else self.ports.node_manager


def ray_log_path(log_dir: str | Path, role: RayRole) -> Path:
    return Path(log_dir) / f"ray-{role.value}.log"


def ray_command(python: Path, spec: RayNodeSpec) -> list[str]:
    """The command line that runs the node in the foreground until SIGTERM; `python` is the interpreter
    of the environment Ray is installed in."""
    ports = spec.ports
    launcher = LOOPBACK_JOIN if spec.role is RayRole.WORKER and spec.loopback else RAY_CLI
    argv = [str(python), "-c", launcher, "start"]
    argv += ["--block", f"--node-ip-address={spec.node_ip}"]
    if spec.role is RayRole.HEAD:
        argv += [
            "--head", f"--port={ports.gcs}", f"--ray-client-server-port={ports.client_server}",
            "--include-dashboard=false", f"--dashboard-host={spec.node_ip}",
        ]  # fmt: skip
    else:
        argv += [f"--address={spec.head_address}"]
    argv += [
        f"--node-manager-port={ports.node_manager}",
        f"--object-manager-port={ports.object_manager}",
        f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}",
        f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
        f"--metrics-export-port={ports.metrics_export}",
        f"--runtime-env-agent-port={ports.runtime_env_agent}",
        f"--min-worker-port={ports.min_worker}",
        f"--max-worker-port={ports.max_worker}",
        f"--temp-dir={spec.temp_dir}",
        f"--num-gpus={spec.num_gpus}",
        "--disable-usage-stats",
    ]
    if spec.num_cpus is not None:
        argv.append(f"--num-cpus={spec.num_cpus}")
    if spec.object_store_bytes is not None:
        argv.append(f"--object-store-memory={spec.object_store_bytes}")
    return argv


def ray_auth_environment(spec: RayNodeSpec) -> dict[str, str]:
    """What every Ray process of the cluster needs: its nodes, `ray status`, and vLLM as the driver."""
    env = {"RAY_USAGE_STATS_ENABLED": "0"}
    if spec.loopback:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # keeps 127.0.0.1, so Ray listens on loopback only
    if spec.auth_token is not None:
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=spec.auth_token)
    return env


def ray_node_environment(spec: RayNodeSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The node's environment: `base` without any Ray setting of its own, plus the cluster's."""
    env = {key: value for key, value in base.items() if not key.startswith("RAY_")}
    env.update(spec.environment)
    env.update(ray_auth_environment(spec))
    env["AUTOSCALER_METRIC_PORT"] = str(spec.ports.autoscaler_metrics)
    env["DASHBOARD_METRIC_PORT"] = str(spec.ports.dashboard_metrics)
    return env


def vllm_driver_environment(spec: RayNodeSpec) -> dict[str, str]:
    """For the vLLM process that drives the cluster (--distributed-executor-backend ray) from the head."""
    return {**ray_auth_environment(spec), "RAY_ADDRESS": spec.address}


class RayNode:
    """One Ray node as a child process of the worker."""

    def __init__(self, python: Path, spec: RayNodeSpec) -> None:
        self.python = python
        self.spec = spec
        self.process: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Start the node and return once it serves; RayStartFailed (and nothing left running) if not."""
        spec = self.spec
        await asyncio.to_thread(spec.temp_dir.mkdir, parents=True, exist_ok=True)
        command = ray_command(self.python, spec)
        self.process = await start_logged(command, ray_node_environment(spec, os.environ), spec.log_path)
        logger.info(
            "Ray %s node starting on %s (ports %d-%d, log %s)",
            spec.role.value, spec.node_ip, spec.ports.base, spec.ports.max_worker, spec.log_path,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.process.returncode is not None:
                code = self.process.returncode
                self.process = None
                raise RayStartFailed(self._failure(f"exited with code {code}"))
            if await accepts(spec.node_ip, spec.ready_port):
                logger.info("Ray %s node up; cluster address %s", spec.role.value, spec.address)
                return
            if loop.time() > deadline:
                await self.stop()
                raise RayStartFailed(self._failure(f"was not up after {timeout:.0f} s"))
            await asyncio.sleep(0.25)

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM (Ray drains the node and stops its processes), SIGKILL after `grace`, then the whole
        process group, so no raylet or GCS outlives its node."""
        process, self.process = self.process, None
        if process is None:
            return
        await terminate(process, grace)
        if hasattr(os, "killpg"):  # the node leads its own process group (worker/spawn.py)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def _failure(self, what: str) -> str:
        spec = self.spec
        try:
            lines = spec.log_path.read_text(errors="replace").splitlines()[-LOG_LINES_IN_ERROR:]
        except OSError:
            lines = []
        tail = "\n".join(lines)
        return f"Ray {spec.role.value} node on {spec.node_ip} {what}; last lines of {spec.log_path}:\n{tail}"
