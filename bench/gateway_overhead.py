"""What the gateway adds to a request: the same tiny completion sent straight to the engine (baseline),
through the worker's proxy, and through the server's gateway, interleaved so that drift hits all three.

    .venv/bin/python bench/gateway_overhead.py [--requests 200]

Starts a real `gpustack start` (server + embedded worker) on free ports with a temporary data dir, deploys
SmolLM2-135M (CPU), measures, and stops everything. Prints latency percentiles per path and the added
milliseconds against the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stubcluster import free_port, login, model_path, percentile, start_gpustack, stop_gpustack, wait  # noqa: E402

from gpustack.server.security import worker_credential  # noqa: E402
from gpustack.utils.engine_secret import engine_secret  # noqa: E402

BODY = {"model": "smollm2", "prompt": "Hello", "max_tokens": 1, "temperature": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per path")
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="gpustack-bench-")
    port, worker_port, engine_low = free_port(), free_port(), 47000
    out = open(os.path.join(data_dir, "gpustack.out"), "wb")  # noqa: SIM115 - handed to the child
    process = start_gpustack(data_dir, port, worker_port, (engine_low, engine_low + 7), out=out)
    server = f"http://127.0.0.1:{port}"
    try:
        admin = login(server)
        admin.post("/v2/models", json={"name": "smollm2", "local_path": model_path()}).raise_for_status()

        def running() -> dict | None:
            items = admin.get("/v2/model-instances").json()["items"]
            return next((i for i in items if i["state"] == "running"), None)

        instance = wait(running, 180, "the model to run")
        key = admin.post("/v2/api-keys", json={"name": "bench"}).json()["value"]
        # Workers accept only their own credential; engines only their instance's secret.
        session_secret = Path(data_dir, "session_secret").read_text().strip()
        credential = worker_credential(session_secret, instance["worker_id"])
        engine_key = engine_secret(credential, instance["id"])
        paths = {
            "engine (baseline)": (
                f"http://127.0.0.1:{instance['port']}/v1/completions",
                {"Authorization": f"Bearer {engine_key}"},
            ),
            "worker proxy": (
                f"http://127.0.0.1:{worker_port}/proxy/v1/completions",
                {
                    "Authorization": f"Bearer {credential}",
                    "X-Target-Port": str(instance["port"]),
                    "X-Target-Instance": str(instance["id"]),
                },
            ),
            "gateway": (f"{server}/v1-openai/completions", {"Authorization": f"Bearer {key}"}),
        }
        client = httpx.Client(timeout=60)
        timings: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(10):  # warm connections and the engine's prompt cache
            for url, headers in paths.values():
                client.post(url, json=BODY, headers=headers).raise_for_status()
        for _ in range(args.requests):
            for name, (url, headers) in paths.items():
                start = time.perf_counter()
                response = client.post(url, json=BODY, headers=headers)
                timings[name].append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
    finally:
        stop_gpustack(process)
        out.close()

    base = statistics.median(timings["engine (baseline)"])
    print(f"\n{args.requests} sequential completions (max_tokens=1) per path, interleaved; milliseconds\n")
    print(f"{'path':<20}{'p50':>8}{'p90':>8}{'p99':>8}{'added p50':>11}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(
            f"{name:<20}{p50:>8.2f}{percentile(values, 0.9):>8.2f}{percentile(values, 0.99):>8.2f}"
            f"{p50 - base:>+11.2f}"
        )


if __name__ == "__main__":
    main()
