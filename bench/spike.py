"""A traffic spike against a cluster, and the same spike straight at its engine, in one run: does the
gateway serve or refuse cleanly, and does the control plane hold (worker ready, no engine restarted)?

    .venv/bin/python bench/spike.py [--streams 2000] [--chunks 20] [--interval-ms 500] [--seconds 10]

Starts a real `gpustack start` (server and embedded worker) whose worker starts the stub engine
(tests/fixtures/stub_engine.py) as a custom backend. Then, each time direct to the engine first (the
baseline) and through the gateway:

1. N concurrent slow streams (20 chunks over 10 s each, all opened at once on their own connections):
   completed/failed, first chunk p50/max, the time it took, peak RSS and CPU of each process;
2. 32 concurrent instant requests for a few seconds: requests/s, p50 and p99.

Throughout, the worker's state and the instance's pid and restart count are watched, and any 5xx counted.
The tables have upstream GPUStack's columns (as in issue 16's measurements), so runs compare.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import loadgen  # noqa: E402
import stubcluster  # noqa: E402
from gateway import BODY, CpuMeter, Target, ms  # noqa: E402


class Watch:
    """The control plane during the load: worker states seen, and whether the instance kept its engine."""

    def __init__(self, cluster: stubcluster.StubCluster, instance: dict[str, Any]) -> None:
        self.cluster = cluster
        self.instance = instance
        self.worker_states: set[str] = set()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            try:
                state = await asyncio.to_thread(lambda: self.cluster.worker()["state"])
                self.worker_states.add(state)
            except Exception as exc:  # the API itself too slow or failing under load: worth reporting
                self.worker_states.add(f"unanswered ({type(exc).__name__})")
            await asyncio.sleep(1.0)

    def engine_kept(self) -> str:
        now = next(i for i in self.cluster.instances() if i["id"] == self.instance["id"])
        same = now["pid"] == self.instance["pid"] and now["restart_count"] == self.instance["restart_count"]
        return "same engine, no restart" if same else f"RESTARTED (pid {now['pid']}, {now['restart_count']})"


class Peak:
    """Peak RSS of each process while a phase runs."""

    def __init__(self, processes: dict[str, Any]) -> None:
        self.processes = processes
        self.peak: dict[str, int] = {}
        self.done = asyncio.Event()

    async def run(self) -> None:
        while not self.done.is_set():
            for name, value in stubcluster.rss(self.processes).items():
                self.peak[name] = max(self.peak.get(name, 0), value)
            await asyncio.sleep(0.2)

    def describe(self) -> str:
        return ", ".join(f"{name} {value / 2**20:.0f}" for name, value in self.peak.items())


def fivexx(run: loadgen.Run) -> int:
    return sum(1 for r in run.results if r.status >= 500)


async def main(args: argparse.Namespace) -> None:
    with stubcluster.stub_cluster() as cluster:
        stub_args = f"--chunks {args.chunks} --chunk-interval-ms {args.interval_ms}"
        instance = cluster.deploy("stub", stub_args)[0]
        key = cluster.engine_key(instance)
        direct = Target("direct", instance["port"], {"Authorization": f"Bearer {key}"})
        gateway = Target("gateway", cluster.port, {"Authorization": f"Bearer {cluster.key}"})
        processes = cluster.processes()
        watch = Watch(cluster, instance)
        watcher = asyncio.create_task(watch.run())
        slow = {**BODY, "stream": True, "max_tokens": args.chunks}
        await loadgen.closed_loop("127.0.0.1", cluster.port, gateway.raw(BODY), 4, requests=200)  # warm

        print(f"\n1. {args.streams} concurrent streams, {args.chunks} chunks every {args.interval_ms:.0f} ms")
        columns = f"{'completed':>11}{'failed':>8}{'5xx':>5}{'first p50':>11}{'first max':>11}{'took':>8}"
        print(f"   {'path':<9}{columns}   peak RSS MiB / CPU")
        for target in (direct, gateway):
            peak = Peak(processes)
            sampler = asyncio.create_task(peak.run())
            with CpuMeter(processes) as cpu:
                run = await loadgen.burst("127.0.0.1", target.port, target.raw(slow), args.streams)
            peak.done.set()
            await sampler
            first = [r.first_byte for r in run.ok]
            counts = f"{len(run.ok):>11}{run.failed:>8}{fivexx(run):>5}"
            times = f"{ms(first) / 1000:>10.2f}s{ms(first, 1.0) / 1000:>10.2f}s{run.seconds:>7.1f}s"
            print(f"   {target.name:<9}{counts}{times}   {peak.describe()} / {cpu.describe()}")
            if run.failed:
                print(f"      answers: {run.statuses()}")

        print(f"\n2. 32 concurrent instant requests, {args.seconds:.0f} s each")
        for target in (direct, gateway):
            with CpuMeter(processes) as cpu:
                run = await loadgen.closed_loop(
                    "127.0.0.1", target.port, target.raw(BODY), 32, seconds=args.seconds
                )
            lat = [r.total for r in run.ok]
            figures = f"{run.rate():>8.0f} req/s  p50 {ms(lat):7.2f} ms  p99 {ms(lat, 0.99):7.2f} ms"
            figures += f"  5xx {fivexx(run)}"
            print(f"   {target.name:<9}{figures}  {run.statuses()}  CPU: {cpu.describe()}")

        watch.stop.set()
        await watcher
        print(f"\ncontrol plane: worker states seen {sorted(watch.worker_states)}; {watch.engine_kept()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2000, help="concurrent slow streams")
    parser.add_argument("--chunks", type=int, default=20, help="chunks per stream")
    parser.add_argument("--interval-ms", type=float, default=500.0, help="between a stream's chunks")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the concurrency-32 runs")
    arguments = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(arguments))
    else:
        uvloop.run(main(arguments))
