"""What the gateway adds to a request, against the same stub engine called directly, in one run.

    .venv/bin/python bench/gateway.py [--requests 2000] [--seconds 4] [--streams 1000] [--latency-ms 1]

Starts a real `gpustack start` (server and embedded worker) on free ports with a temporary data dir; the
worker starts the stub engine (tests/fixtures/stub_engine.py, fixed latency, almost no CPU) as a custom
backend. The client is bench/loadgen.py (raw keep-alive connections). Rows, each direct then through
the gateway, interleaved in blocks so that drift hits both:

- concurrency 1, plain completions: latency percentiles and what the gateway adds;
- concurrency 1, streams: time to the first chunk;
- concurrency 32: requests per second, p50/p99, and the CPU each process used;
- N concurrent slow streams (20 chunks over 10 s each): completed, first chunk p50/max, the server's RSS
  before, at its peak and after, and CPU; through the gateway twice, to see that memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loadgen  # noqa: E402
import stubcluster  # noqa: E402

BODY = {"model": "stub", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}


class Target:
    def __init__(self, name: str, port: int, headers: dict[str, str]) -> None:
        self.name = name
        self.port = port
        self.headers = headers

    def raw(self, body: dict) -> bytes:
        return loadgen.post("127.0.0.1", self.port, "/v1/chat/completions", body, self.headers)


def ms(values: list[float], q: float | None = None) -> float:
    if not values:
        return float("nan")
    return 1000 * (statistics.median(values) if q is None else loadgen.percentile(values, q))


def own_cpu() -> float:
    times = os.times()
    return times.user + times.system


class CpuMeter:
    """CPU seconds per process (the cluster's and this client's) over a phase."""

    def __init__(self, processes: dict[str, psutil.Process]) -> None:
        self.processes = processes

    def __enter__(self) -> CpuMeter:
        self.start = {**stubcluster.cpu_seconds(self.processes), "client": own_cpu()}
        self.began = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        end = {**stubcluster.cpu_seconds(self.processes), "client": own_cpu()}
        seconds = time.perf_counter() - self.began
        self.percent = {k: 100 * (end[k] - self.start[k]) / seconds for k in end if k in self.start}

    def describe(self) -> str:
        return ", ".join(f"{k} {v:.0f}%" for k, v in self.percent.items())


async def sequential(direct: Target, gateway: Target, body: dict, requests: int) -> dict[str, loadgen.Run]:
    runs = {direct.name: loadgen.Run(), gateway.name: loadgen.Run()}
    block = 50
    for _ in range(max(1, requests // block)):
        for target in (direct, gateway):
            run = await loadgen.closed_loop("127.0.0.1", target.port, target.raw(body), 1, requests=block)
            runs[target.name].results += run.results
    return runs


async def slow_streams(target: Target, body: dict, count: int, processes: dict[str, psutil.Process]) -> None:
    """`count` streams at once; the server's RSS before, at its peak and after."""
    server = processes["server"]
    before = server.memory_info().rss
    peak = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, server.memory_info().rss)
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    with CpuMeter(processes) as meter:
        run = await loadgen.burst("127.0.0.1", target.port, target.raw(body), count)
    done.set()
    await sampler
    await asyncio.sleep(1)
    after = server.memory_info().rss
    first = [r.first_byte for r in run.ok]
    memory = f"server RSS {before / 2**20:.0f} -> peak {peak / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    done_of = f"{len(run.ok)}/{len(run.results)}"
    print(f"   {target.name:<9} completed {done_of}  first chunk p50 {ms(first):.1f} ms, "
          f"max {ms(first, 1.0):.1f} ms  {memory}  {run.seconds:.1f} s")  # fmt: skip
    print(f"             CPU: {meter.describe()}  {run.statuses()}")


async def main(args: argparse.Namespace) -> None:
    with stubcluster.stub_cluster() as cluster:
        stub_args = f"--latency-ms {args.latency_ms} --chunks 20 --chunk-interval-ms {args.interval_ms}"
        instance = cluster.deploy("stub", stub_args)[0]
        key = cluster.engine_key(instance)
        direct = Target("direct", instance["port"], {"Authorization": f"Bearer {key}"})
        gateway = Target("gateway", cluster.port, {"Authorization": f"Bearer {cluster.key}"})
        processes = cluster.processes()
        # Warm both paths (connections, caches).
        await sequential(direct, gateway, BODY, 100)

        slow_every = f"slow streams: a chunk every {args.interval_ms:.0f} ms"
        print(f"\nstub engine: {args.latency_ms} ms per answer; {slow_every}")
        print(f"cluster: server pid {processes['server'].pid}, worker and engine its children; 2 CPUs here\n")

        runs = await sequential(direct, gateway, BODY, args.requests)
        print(f"1. {args.requests} plain requests per path, one at a time (ms)")
        print(f"   {'path':<9}{'p50':>8}{'p90':>8}{'p99':>8}{'added p50':>11}{'added p99':>11}")
        base = [r.total for r in runs["direct"].ok]
        for name, run in runs.items():
            lat = [r.total for r in run.ok]
            added = f"{ms(lat) - ms(base):>+11.3f}{ms(lat, 0.99) - ms(base, 0.99):>+11.3f}"
            print(
                f"   {name:<9}{ms(lat):>8.3f}{ms(lat, 0.9):>8.3f}{ms(lat, 0.99):>8.3f}{added}  "
                f"{run.statuses()}"
            )

        stream = {**BODY, "stream": True, "max_tokens": 3, "stub": {"interval_ms": 5}}
        runs = await sequential(direct, gateway, stream, max(100, args.requests // 4))
        print("\n2. streams, one at a time: time to the first chunk (ms)")
        base = [r.first_byte for r in runs["direct"].ok]
        for name, run in runs.items():
            first = [r.first_byte for r in run.ok]
            more = ms(first) - ms(base)
            print(
                f"   {name:<9} first chunk p50 {ms(first):.3f}  p99 {ms(first, 0.99):.3f}  "
                f"added p50 {more:+.3f}  {run.statuses()}"
            )

        print(f"\n3. concurrency 32, plain requests, {args.seconds:.0f} s per run, two runs per path")
        results: dict[str, list[tuple[loadgen.Run, CpuMeter]]] = {"direct": [], "gateway": []}
        for _ in range(2):
            for target in (direct, gateway):
                with CpuMeter(processes) as meter:
                    run = await loadgen.closed_loop(
                        "127.0.0.1", target.port, target.raw(BODY), 32, seconds=args.seconds
                    )
                results[target.name].append((run, meter))
        for name, pairs in results.items():
            for run, meter in pairs:
                lat = [r.total for r in run.ok]
                figures = f"{run.rate():>8.0f} req/s  p50 {ms(lat):6.2f}  p99 {ms(lat, 0.99):6.2f} ms"
                print(f"   {name:<9}{figures}  {run.statuses()}  CPU: {meter.describe()}")

        if args.streams:
            print(f"\n4. {args.streams} concurrent slow streams (20 chunks, one every {args.interval_ms} ms)")
            slow = {**BODY, "stream": True, "max_tokens": 20}
            # Through the gateway twice: memory that stays flat does not grow with the second burst.
            again = Target("again", gateway.port, gateway.headers)
            for target in (direct, gateway, again):
                await slow_streams(target, slow, args.streams, processes)
        worker = cluster.worker()
        restarts = [i["restart_count"] for i in cluster.instances()]
        print(f"\nafter the run: worker {worker['state']}, engine restarts {sum(restarts)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="plain requests per path at concurrency 1")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each concurrency-32 run")
    parser.add_argument("--streams", type=int, default=1000, help="concurrent slow streams (0: skip)")
    parser.add_argument("--latency-ms", type=float, default=1.0, help="the stub engine's fixed latency")
    parser.add_argument("--interval-ms", type=float, default=500.0, help="between a slow stream's chunks")
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))
