"""What gpustack adds to an engine's startup: deploy → running, minus the engine's own time to ready when
the same command is started by hand, per backend that runs here (llama-box, custom), in one run.

Usage: python bench/engine_startup.py [--runs 3]

It starts one gpustack server with its embedded worker on loopback. Per backend and run: POST the model,
poll GET /v2/model-instances every 20 ms until the instance is running (deploy → running), delete the
model, then start the exact command the worker logged ("gpustack starts: ...", on a free port, with the
worker's environment) by hand and poll its readiness probe every 20 ms (by hand). Cached files and
environment: the model file is local and the executable resolved once before the first run (the worker
probes llama.cpp's --help once per executable). Goal (issue 10): at most 1 s of overhead.
"""

from __future__ import annotations

import argparse
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stubcluster import free_port, login, model_path, start_gpustack, stop_gpustack, wait_worker_ready  # noqa: E402
from stubcluster import wait as stubcluster_wait  # noqa: E402

from gpustack.worker.engines.resolve import PACKAGED_PROGRAMS  # noqa: E402

POLL = 0.02
_STARTS = re.compile(r"^==== \S+ gpustack starts: (.*)$", re.MULTILINE)


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """stubcluster.wait asking every POLL s: what is timed here is when a state is first seen."""
    return stubcluster_wait(predicate, timeout, what, POLL)


def models(server: str) -> dict[str, dict[str, Any]]:
    llama_server = PACKAGED_PROGRAMS["llama-server"][1]()
    if llama_server is None:
        sys.exit("needs llama.cpp's server: scripts/install-llama-cpp.sh")
    common = {"local_path": model_path(), "backend_parameters": ["--ctx-size", "512", "--parallel", "1"]}
    return {
        "llama-box": {**common, "backend": "llama-box"},
        "custom": {
            **common,
            "backend": "custom",
            "run_command": f"{llama_server} -m {{model_path}} --host {{host}} --port {{port}}",
            "resources": {"ram": "512MiB"},
        },
    }


def by_hand(command: list[str], data_dir: Path) -> float:
    """Seconds from starting the logged command (on a fresh port) to its /health answering 200."""
    port = free_port()
    argv = list(command)
    argv[argv.index("--port") + 1] = str(port)
    with open(data_dir / "by-hand.log", "ab") as log:
        began = time.monotonic()
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait(
                lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200,
                120,
                "the engine started by hand",
            )
            return time.monotonic() - began
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def deploy(admin: httpx.Client, name: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from the POST to the instance running, and the instance."""
    began = time.monotonic()
    created = admin.post("/v2/models", json={"name": name, **body})
    created.raise_for_status()

    def running() -> dict[str, Any] | None:
        items = admin.get("/v2/model-instances", params={"model_id": created.json()["id"]}).json()["items"]
        return next((i for i in items if i["state"] == "running"), None)

    instance = wait(running, 120, f"{name} to run")
    elapsed = time.monotonic() - began
    admin.delete(f"/v2/models/{created.json()['id']}").raise_for_status()
    return elapsed, instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="gpustack-startup-"))
    port, worker_port, low = free_port(), free_port(), 46000
    out = open(data_dir / "gpustack.out", "wb")  # noqa: SIM115 - handed to the child
    process = start_gpustack(
        data_dir, port, worker_port, (low, low + 16), out=out, env={"GPUSTACK_HEARTBEAT_INTERVAL": "1"}
    )
    server = f"http://127.0.0.1:{port}"
    rows = []
    try:
        admin = login(server, timeout=60, ready_s=90)
        wait_worker_ready(admin)
        for backend, body in models(server).items():
            deploy(admin, f"warm-{backend}", body)  # resolves the executable, loads the file into the cache
            managed, manual = [], []
            for run in range(args.runs):
                elapsed, instance = deploy(admin, f"{backend}-{run}", body)
                log = (data_dir / "log" / "serve" / f"{instance['id']}.log").read_text(errors="replace")
                command = shlex.split(_STARTS.findall(log)[-1])
                managed.append(elapsed)
                manual.append(by_hand(command, data_dir))
            overhead = [m - h for m, h in zip(managed, manual, strict=True)]
            rows.append(
                (backend, len(managed), statistics.median(managed), statistics.median(manual), overhead)
            )
    finally:
        stop_gpustack(process, 60)
        out.close()
    head = ("backend", "runs", "deploy→running s", "by hand s", "overhead s (median, max)")
    print(f"{head[0]:<10} {head[1]:>4} {head[2]:>17} {head[3]:>10} {head[4]:>25}")
    for backend, runs, managed_s, manual_s, overhead in rows:
        spread = f"{statistics.median(overhead):.2f}, {max(overhead):.2f}"
        print(f"{backend:<10} {runs:>4} {managed_s:>17.2f} {manual_s:>10.2f} {spread:>25}")
    print(f"log: {data_dir / 'gpustack.out'}")


if __name__ == "__main__":
    main()
