"""What the gateway's metrics cost a request: two real clusters in one run, one with metrics and one with
--disable-metrics, answering the same tiny completion interleaved; and the meter alone, in process.

    .venv/bin/python bench/metrics_overhead.py [--requests 200]

Each cluster is a `gpustack start` (server + embedded worker) on free ports with a temporary data dir and
SmolLM2-135M on the CPU. Prints latency percentiles per cluster and the difference, then the meter's own
cost per request (observing a relayed three-chunk JSON body, against relaying it bare).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time

import httpx
from prometheus_client import CollectorRegistry
from starlette.responses import StreamingResponse
from stubcluster import free_port, login, model_path, percentile, start_gpustack, stop_gpustack, wait

from gpustack.metrics.gateway import GatewayMetrics

BODY = {"model": "smollm2", "prompt": "Hello", "max_tokens": 1, "temperature": 0}
CHUNKS = [
    b'{"choices":[{"text":"Hi"}],',
    b'"model":"smollm2",',
    b'"usage":{"prompt_tokens":2,"completion_tokens":1}}',
]


class Cluster:
    def __init__(self, *extra: str) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="gpustack-bench-")
        self.port = free_port()
        low = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = open(os.path.join(self.data_dir, "gpustack.out"), "wb")  # noqa: SIM115 - handed to the child
        self.process = start_gpustack(
            self.data_dir, self.port, free_port(), (low, low), "--worker-metrics-port", str(free_port()),
            "--disable-rpc-servers", *extra, out=self.out,
        )  # fmt: skip

    def deploy(self) -> str:
        admin = login(self.url)
        admin.post("/v2/models", json={"name": "smollm2", "local_path": model_path()}).raise_for_status()
        wait(
            lambda: any(i["state"] == "running" for i in admin.get("/v2/model-instances").json()["items"]),
            180,
            "the model to run",
        )
        return str(admin.post("/v2/api-keys", json={"name": "bench"}).json()["value"])

    def stop(self) -> None:
        stop_gpustack(self.process)
        self.out.close()


async def _drain(response: StreamingResponse) -> None:
    async for _ in response.body_iterator:
        pass


async def _body():  # type: ignore[no-untyped-def]
    for chunk in CHUNKS:
        yield chunk


async def meter_cost(rounds: int) -> tuple[float, float]:
    """Microseconds per request: relaying a body bare, and through the meter."""
    meter = GatewayMetrics(CollectorRegistry())
    timings = []
    for observed in (False, True) * 3:  # alternated, best of three each
        start = time.perf_counter()
        for _ in range(rounds):
            response = StreamingResponse(_body(), media_type="application/json")
            if observed:
                response = meter.relayed(response, "smollm2", "smollm2-1", "completions", start)
            await _drain(response)
        timings.append((observed, (time.perf_counter() - start) / rounds * 1e6))
    bare = min(t for observed, t in timings if not observed)
    metered = min(t for observed, t in timings if observed)
    return bare, metered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per cluster")
    args = parser.parse_args()

    clusters = {"metrics on": Cluster(), "metrics off": Cluster("--disable-metrics")}
    timings: dict[str, list[float]] = {name: [] for name in clusters}
    try:
        keys = {name: cluster.deploy() for name, cluster in clusters.items()}
        client = httpx.Client(timeout=60)
        for _ in range(10):  # warm connections and the engines' prompt caches
            for name, cluster in clusters.items():
                headers = {"Authorization": f"Bearer {keys[name]}"}
                client.post(f"{cluster.url}/v1/completions", json=BODY, headers=headers).raise_for_status()
        for _ in range(args.requests):
            for name, cluster in clusters.items():
                headers = {"Authorization": f"Bearer {keys[name]}"}
                start = time.perf_counter()
                response = client.post(f"{cluster.url}/v1/completions", json=BODY, headers=headers)
                timings[name].append((time.perf_counter() - start) * 1000)
                response.raise_for_status()
    finally:
        for cluster in clusters.values():
            cluster.stop()

    base = statistics.median(timings["metrics off"])
    print(f"\n{args.requests} sequential completions (max_tokens=1) through the gateway, interleaved; ms\n")
    print(f"{'cluster':<14}{'p50':>8}{'p90':>8}{'p99':>8}{'vs off p50':>12}")
    for name, values in timings.items():
        p50 = statistics.median(values)
        print(
            f"{name:<14}{p50:>8.2f}{percentile(values, 0.9):>8.2f}{percentile(values, 0.99):>8.2f}"
            f"{p50 - base:>+12.2f}"
        )
    bare, metered = asyncio.run(meter_cost(20000))
    print(
        "\nthe meter alone, in process (20000 relayed three-chunk JSON bodies, best of three), us per request"
    )
    print(f"{'relay bare':<14}{bare:>8.2f}")
    print(f"{'relay metered':<14}{metered:>8.2f}")
    print(f"{'meter adds':<14}{metered - bare:>+8.2f}")


if __name__ == "__main__":
    main()
