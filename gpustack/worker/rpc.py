"""One llama.cpp RPC server per GPU, so that llama-box instances on other workers can use this worker's GPUs
(distributed inference across workers). Logs go to <log-dir>/rpc_server/gpu-<index>.log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpustack.backends.devices import visible_devices_env
from gpustack.config import Config
from gpustack.schemas.workers import GPUDevice
from gpustack.utils.network import accepts, port_is_free
from gpustack.worker.engines.resolve import find_program
from gpustack.worker.process import start_logged, terminate

logger = logging.getLogger(__name__)

CHECK_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 60.0


def resolve_rpc_server(bin_dir: str) -> str | None:
    """ggml-rpc-server beside the llama-box executable the worker would use, else on PATH."""
    server = find_program("llama-box", Path(bin_dir)) or find_program("llama-server", Path(bin_dir))
    if server is not None:
        for name in ("ggml-rpc-server", "rpc-server"):
            candidate = Path(server.path).parent / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("ggml-rpc-server") or shutil.which("rpc-server")


def rpc_log_path(log_dir: str, gpu_index: int) -> Path:
    return Path(log_dir) / "rpc_server" / f"gpu-{gpu_index}.log"


@dataclass
class _Server:
    device: GPUDevice
    port: int
    process: asyncio.subprocess.Process | None = None
    failures: int = 0
    next_start: float = 0.0
    ready: bool = False
    log: Path = field(default_factory=Path)


class RpcServers:
    def __init__(self, config: Config, devices: Callable[[], list[GPUDevice]], bind_ip: str) -> None:
        self.config = config
        self._devices = devices
        self._bind_ip = bind_ip
        self._servers: dict[int, _Server] = {}
        self._executable: str | None = None

    def ports(self) -> dict[int, int]:
        """GPU index → port of its RPC server, for the servers that accept connections."""
        return {index: server.port for index, server in self._servers.items() if server.ready}

    async def run(self, stop: asyncio.Event) -> None:
        if self.config.disable_rpc_servers:
            return
        self._executable = await asyncio.to_thread(resolve_rpc_server, self.config.bin_dir)
        if self._executable is None:
            logger.warning(
                "no llama.cpp RPC server executable found; distributed inference cannot use this worker"
            )
            return
        try:
            while not stop.is_set():
                try:
                    await self._reconcile()
                except Exception:
                    logger.exception("RPC servers: reconcile failed; trying again")
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), CHECK_SECONDS)
        finally:
            await asyncio.gather(*(self._stop(server) for server in list(self._servers.values())))

    async def _reconcile(self) -> None:
        wanted = {device.index: device for device in self._devices()}
        for index, gone in list(self._servers.items()):
            if index not in wanted:
                await self._stop(gone)
                del self._servers[index]
        for index, device in wanted.items():
            existing = self._servers.get(index)
            if existing is not None:
                server = existing
            else:
                port = self._free_port()
                if port is None:
                    low, high = self.config.rpc_server_port_range
                    logger.warning(
                        "no free port in --rpc-server-port-range %d-%d for GPU %d", low, high, index
                    )
                    continue
                server = self._servers[index] = _Server(
                    device, port, log=rpc_log_path(self.config.log_dir, index)
                )
            if server.process is not None and server.process.returncode is None:
                server.ready = server.ready or await accepts(self._bind_ip, server.port)
                continue
            if server.process is not None:
                server.failures += 1
                server.ready = False
                delay = min(BACKOFF_MAX_SECONDS, 2.0**server.failures)
                server.next_start = time.monotonic() + delay
                logger.warning(
                    "RPC server for GPU %d exited with code %s; restarting in %.0fs (see %s)",
                    index, server.process.returncode, delay, server.log,
                )  # fmt: skip
                server.process = None
            if time.monotonic() >= server.next_start:
                await self._start(server)

    async def _start(self, server: _Server) -> None:
        assert self._executable is not None
        device = server.device
        command = [self._executable, "--host", self._bind_ip, "--port", str(server.port)]
        threads = os.cpu_count() or 1
        command += ["--threads", str(threads)]
        env = {**os.environ}
        if not device.virtual:
            env.update(visible_devices_env(device.type.value, [device.visible_id or str(device.index)]))
        server.process = await start_logged(command, env, server.log)
        logger.info(
            "RPC server for GPU %d (%s) on %s:%d", device.index, device.name, self._bind_ip, server.port
        )
        for _ in range(20):
            if await accepts(self._bind_ip, server.port):
                server.ready = True
                server.failures = 0
                return
            await asyncio.sleep(0.1)

    async def _stop(self, server: _Server) -> None:
        server.ready = False
        await terminate(server.process, 5.0)

    def _free_port(self) -> int | None:
        low, high = self.config.rpc_server_port_range
        taken = {server.port for server in self._servers.values()}
        for port in range(low, high + 1):
            if port not in taken and port_is_free(port, self._bind_ip):
                return port
        return None
