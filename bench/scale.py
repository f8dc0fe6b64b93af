"""One server for many workers and instances (issue 14): simulated workers against a real server.

    .venv/bin/python bench/scale.py [--sizes 100,300,1000] [--db sqlite,postgres] [--window 30]
                                    [--watchers 100] [--instances-per-worker 10]

A real `gpustack start --disable-worker` on an empty data dir (SQLite), or on a PostgreSQL database of
its own (scripts/postgres.sh with GPUSTACK_TEST_POSTGRES_DB=gpustack_scale, emptied before each run).
N simulated workers, each a few coroutines of this process speaking the worker protocol: register with
the cluster token (the answer carries the worker's own credential), heartbeat at the server's default
interval with a realistic status (0-8 GPUs of 80 GiB, CPU, memory, filesystems), hold the assignment
watch open, and report every instance assigned to it `running` (as a worker whose engine started
would). Models of the custom backend with stated resources (one GPU, 1 GiB) and up to 64 replicas make
N x --instances-per-worker instances that the real scheduler places on them (10,000 at N = 1,000).

Once every instance runs, for --window seconds: the server's CPU (% of one core) and RSS, heartbeat
round trips p50/p99 (measured by the simulated workers: the server's handling plus this machine's
loopback and client); then GET of workers, models and model instances p50/p95 (page 1 of 100, a filter
as the UI asks, workers with `fields`), next to GET /healthz from the same client at the same moment as
their baseline; model creation median (replicas 0, deleted again); how long a change (a model's
description) takes to reach every one of --watchers watch streams (p50/p99); database size; then the
server restarted on the full database: time to /healthz. Idle RSS is the empty server's, before the
workers come. One table per database, each figure next to its goal.

Figures are noisy on a shared 2-core machine (the simulated workers run on the same cores as the
server): compare runs made under the same conditions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.stubcluster import free_port  # noqa: E402

PASSWORD = "bench-admin-pass"
GiB = 1024**3
HEARTBEAT = 5.0  # the server's default --heartbeat-interval
REPLICAS_MAX = 64
BASELINE = "/healthz (baseline)"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def status_payload(gpus: int, rng: random.Random) -> dict[str, Any]:
    devices = [
        {
            "index": i,
            "name": "NVIDIA A100-SXM4-80GB",
            "vendor": "NVIDIA",
            "type": "cuda",
            "uuid": f"GPU-{uuidlib.uuid4()}",
            "memory": {"total": 80 * GiB, "used": rng.randrange(0, 8 * GiB), "utilization_rate": 3.0},
            "core": {"total": 6912, "utilization_rate": rng.random() * 10},
            "temperature": 40.0 + rng.random() * 10,
        }
        for i in range(gpus)
    ]
    return {
        "cpu": {"total": 64, "utilization_rate": rng.random() * 20},
        "memory": {"total": 1024 * GiB, "used": rng.randrange(10 * GiB, 40 * GiB)},
        "swap": {"total": 0, "used": 0},
        "filesystem": [{"mount_point": "/", "total": 2000 * GiB, "used": 300 * GiB, "free": 1700 * GiB}],
        "os": {"name": "Ubuntu", "version": "22.04"},
        "kernel": {"name": "Linux", "release": "5.15.0", "version": "#1 SMP", "architecture": "x86_64"},
        "uptime": {"uptime": 1000.0, "boot_time": "2026-01-01T00:00:00Z"},
        "gpu_devices": devices,
    }


@dataclass
class Stats:
    heartbeats: list[float] = field(default_factory=list)
    heartbeat_errors: int = 0
    reports: int = 0
    report_errors: int = 0
    recording: bool = False


class SimWorker:
    """One simulated worker, with its own connections as a real worker has: one client shared by all
    made httpcore's pool the bottleneck (assigning each request scans every connection), and queued
    reports starved the heartbeats behind them."""

    def __init__(self, index: int, gpus: int, url: str, token: str, stats: Stats, port: int) -> None:
        self.index = index
        self.port = port
        self.gpus = gpus
        # The assignment watch, a heartbeat and two reports at a time.
        self.http = httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=4))
        self.reporting = asyncio.Semaphore(2)
        self.token = token
        self.stats = stats
        self.rng = random.Random(index)
        self.uuid = str(uuidlib.UUID(int=index + 1))
        self.id = 0
        self.credential = ""
        self.reported: set[int] = set()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}

    async def register(self) -> None:
        body = {
            "name": f"sim-{self.index:05d}",
            "uuid": self.uuid,
            "hostname": f"sim-{self.index:05d}",
            "ip": "127.0.0.1",  # the server probes every worker's /healthz: health_responder answers
            "port": self.port,
            "heartbeat_interval": HEARTBEAT,
            "status": status_payload(self.gpus, self.rng),
        }
        for attempt in range(20):
            try:
                response = await self.http.post(
                    "/v2/workers/register", json=body, headers={"Authorization": f"Bearer {self.token}"}
                )
                response.raise_for_status()
                break
            except httpx.HTTPError:
                if attempt == 19:
                    raise
                await asyncio.sleep(1 + self.rng.random())
        answer = response.json()
        self.id, self.credential = answer["id"], answer["credential"]

    async def heartbeats(self) -> None:
        await asyncio.sleep(self.rng.random() * HEARTBEAT)
        while True:
            body = {"status": status_payload(self.gpus, self.rng), "healthy": True}
            started = time.perf_counter()
            try:
                response = await self.http.put(
                    f"/v2/workers/{self.id}/status", json=body, headers=self.auth()
                )
                response.raise_for_status()
                if self.stats.recording:
                    self.stats.heartbeats.append(time.perf_counter() - started)
            except httpx.HTTPError:
                self.stats.heartbeat_errors += 1
            await asyncio.sleep(max(0.0, HEARTBEAT - (time.perf_counter() - started)))

    async def report(self, instance_id: int) -> None:
        async with self.reporting:
            await self._report(instance_id)

    async def _report(self, instance_id: int) -> None:
        body = {"worker_id": self.id, "state": "running", "port": 40000 + instance_id % 20000, "pid": 1}
        for _ in range(5):
            try:
                response = await self.http.put(
                    f"/v2/model-instances/{instance_id}/state", json=body, headers=self.auth()
                )
                if response.status_code in (404, 409):
                    if os.environ.get("SCALE_DEBUG"):
                        print(f"report of instance {instance_id}: {response.text}", flush=True)
                    return  # gone or moved meanwhile
                response.raise_for_status()
                self.stats.reports += 1
                return
            except httpx.HTTPError as exc:
                if os.environ.get("SCALE_DEBUG"):
                    print(f"report of instance {instance_id}: {exc!r}", flush=True)
                self.stats.report_errors += 1
                await asyncio.sleep(1)

    async def watch(self) -> None:
        import json

        while True:
            try:
                async with self.http.stream(
                    "GET",
                    "/v2/model-instances",
                    params={"worker_id": self.id, "watch": "true"},
                    headers=self.auth(),
                    timeout=httpx.Timeout(60.0, read=120.0),
                ) as response:
                    async for line in response.aiter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        items = event.get("items") or ([event["data"]] if "data" in event else [])
                        if os.environ.get("SCALE_DEBUG"):
                            seen = [(i.get("id"), i.get("worker_id"), i.get("state")) for i in items]
                            print(f"worker {self.id}: {seen}", flush=True)
                        for item in items:
                            if event.get("type") == "deleted":
                                self.reported.discard(item["id"])
                                continue
                            if item["worker_id"] == self.id and item["state"] in ("scheduled", "starting"):
                                if item["id"] not in self.reported:
                                    self.reported.add(item["id"])
                                    asyncio.create_task(self.report(item["id"]))
            except (httpx.HTTPError, KeyError) as exc:
                if os.environ.get("SCALE_DEBUG"):
                    print(f"watch of worker {self.id}: {exc!r}", flush=True)
                await asyncio.sleep(1)


async def health_responder() -> tuple[asyncio.AbstractServer, int]:
    """What every simulated worker's /healthz answers (one listener for all): 200, kept alive."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n"
                    b'{"status":"ok"}'
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    return server, server.sockets[0].getsockname()[1]


class ResendingTransport(httpx.AsyncBaseTransport):
    """A kept-alive connection that the server closes as a request goes out (its idle timer fires while
    its loop was busy) fails that request: send it again on a fresh connection, up to three times."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=3)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(4):
            try:
                return await self.inner.handle_async_request(request)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if attempt == 3:
                    raise
                await asyncio.sleep(0.2)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    data_dir: str
    log_path: str

    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)


def start_server(
    data_dir: str, port: int, database_url: str | None, tree: str | None = None
) -> tuple[Server, float]:
    log_path = os.path.join(data_dir, "server.out")
    args = [
        sys.executable, "-m", "gpustack", "start", "--data-dir", data_dir, "--host", "127.0.0.1",
        "--port", str(port), "--bootstrap-password", PASSWORD, "--disable-worker",
    ]  # fmt: skip
    if database_url:
        args += ["--database-url", database_url]
    started = time.perf_counter()
    with open(log_path, "ab") as log:
        # --tree: the server's code from another checkout (a before/after comparison in one run)
        env = {**os.environ, "PYTHONPATH": tree} if tree else None
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tree)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {Path(log_path).read_text()[-3000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return Server(process, url, data_dir, log_path), time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    process.kill()
    raise SystemExit("the server did not answer /healthz within 120 s")


def stop_server(server: Server) -> None:
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


async def reset_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await connection.close()


async def postgres_size(url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await connection.close()


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def timed_gets(client: httpx.AsyncClient, path: str, params: dict[str, Any], count: int) -> list[float]:
    found = []
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        response.raise_for_status()
        found.append(time.perf_counter() - started)
    return found


async def watch_latency(url: str, cookies: httpx.Cookies, watchers: int, changes: int) -> list[float]:
    """Open `watchers` model watches, change one model's description `changes` times, and time how long
    each change takes to reach each stream."""
    import json

    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=60, limits=limits) as client:
        models = (await client.get("/v2/models", params={"perPage": 1})).json()["items"]
        target = models[0]["id"]
        arrivals: dict[str, list[float]] = {}
        ready = 0

        async def one() -> None:
            nonlocal ready
            async with client.stream("GET", "/v2/models", params={"watch": "true"}) as response:
                first = True
                async for line in response.aiter_lines():
                    if first:
                        ready += 1
                        first = False
                        continue
                    event = json.loads(line)
                    description = (event.get("data") or {}).get("description", "")
                    if description.startswith("scale-"):
                        arrivals.setdefault(description, []).append(time.perf_counter())

        tasks = [asyncio.create_task(one()) for _ in range(watchers)]
        while ready < watchers:  # noqa: ASYNC110 (a bench: polling is plain enough)
            await asyncio.sleep(0.05)
        sent: dict[str, float] = {}
        for n in range(changes):
            description = f"scale-{n}"
            sent[description] = time.perf_counter()
            (await client.put(f"/v2/models/{target}", json={"description": description})).raise_for_status()
            deadline = time.perf_counter() + 10
            while len(arrivals.get(description, [])) < watchers and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        latencies = []
        for description, at in sent.items():
            got = arrivals.get(description, [])
            latencies += [t - at for t in got] + [float("inf")] * (watchers - len(got))
        return latencies


async def run_size(n: int, database: str, args: argparse.Namespace) -> dict[str, Any]:
    data_dir = tempfile.mkdtemp(prefix=f"gpustack-scale-{database}-{n}-")
    database_url = None
    if database == "postgres":
        database_url = args.postgres_url
        await reset_postgres(database_url)
    port = free_port()
    server, start_empty = start_server(data_dir, port, database_url, args.tree)
    result: dict[str, Any] = {"start_empty": start_empty}
    stats = Stats()
    tasks: list[asyncio.Task[Any]] = []
    try:
        await asyncio.sleep(3)
        result["idle_rss"] = server.ps().memory_info().rss
        token = Path(data_dir, "token").read_text().strip()  # noqa: ASYNC240
        admin = httpx.AsyncClient(base_url=server.url, timeout=120, transport=ResendingTransport())
        (await admin.post("/auth/login", json={"username": "admin", "password": PASSWORD})).raise_for_status()

        rng = random.Random(n)
        gpus = [rng.randint(1, 8) for _ in range(n)]
        responder, health_port = await health_responder()
        workers = [SimWorker(i, gpus[i], server.url, token, stats, health_port) for i in range(n)]
        print(f"[{database} N={n}] registering {n} workers", flush=True)
        semaphore = asyncio.Semaphore(20)

        async def register(worker: SimWorker) -> None:
            async with semaphore:
                await worker.register()

        await asyncio.gather(*(register(w) for w in workers))
        for worker in workers:
            tasks.append(asyncio.create_task(worker.heartbeats()))
            tasks.append(asyncio.create_task(worker.watch()))

        instances = n * args.instances_per_worker
        models = -(-instances // REPLICAS_MAX)
        print(f"[{database} N={n}] creating {models} models, {instances} instances", flush=True)
        left = instances
        for m in range(models):
            replicas = min(REPLICAS_MAX, left)
            left -= replicas
            body = {
                "name": f"scale-model-{m:04d}",
                "backend": "custom",
                "run_command": "engine --port {port}",
                "resources": {"gpus": 1, "vram": "1GiB", "ram": "256MiB"},
                "replicas": replicas,
            }
            for _ in range(30):  # an overloaded server answers 503 (its database pool ran dry): again
                response = await admin.post("/v2/models", json=body)
                if response.status_code != 503:
                    break
                print(f"[{database} N={n}] create answered 503: {response.text[:200]}", flush=True)
                await asyncio.sleep(5)
            if response.status_code != 409:  # 409: created by an attempt whose answer was lost
                response.raise_for_status()

        placed_at = time.perf_counter()
        while True:
            running = (
                await admin.get("/v2/model-instances", params={"state": "running", "perPage": 1})
            ).json()["pagination"]["total"]
            if os.environ.get("SCALE_DEBUG"):
                listed = (await admin.get("/v2/model-instances", params={"perPage": 1000})).json()["items"]
                states = [i["state"] for i in listed]
                print("states:", {s: states.count(s) for s in set(states)})
                print("reports:", stats.reports, stats.report_errors, flush=True)
            if running >= instances:
                break
            if time.perf_counter() - placed_at > args.settle_timeout:
                print(f"[{database} N={n}] only {running}/{instances} running; measuring anyway", flush=True)
                break
            await asyncio.sleep(2)
        result["running"] = running
        result["instances"] = instances
        result["settle"] = time.perf_counter() - placed_at
        print(f"[{database} N={n}] {running} running after {result['settle']:.0f} s", flush=True)

        await asyncio.sleep(min(HEARTBEAT * 2, 10))  # settle
        process = server.ps()
        rss_start = process.memory_info().rss
        cpu_start, wall_start = cpu_seconds(process), time.perf_counter()
        stats.recording = True
        await asyncio.sleep(args.window)
        stats.recording = False
        result["cpu"] = 100 * (cpu_seconds(process) - cpu_start) / (time.perf_counter() - wall_start)
        result["rss"] = process.memory_info().rss
        result["rss_growth"] = result["rss"] - rss_start
        result["heartbeats"] = list(stats.heartbeats)
        result["heartbeat_errors"] = stats.heartbeat_errors

        # Lists as the UI asks: page 1 of 100, and a filter.
        some_worker = workers[len(workers) // 2].id
        some_model = (await admin.get("/v2/models", params={"perPage": 1})).json()["items"][0]["id"]
        queries: dict[str, tuple[str, dict[str, Any]]] = {
            # The baseline of every row below, same client, same moment: a route with nothing behind it.
            BASELINE: ("/healthz", {}),
            "workers": ("/v2/workers", {"page": 1, "perPage": 100}),
            "workers ?fields": ("/v2/workers", {"perPage": 100, "fields": "id,name,state,labels"}),
            "workers ?state": ("/v2/workers", {"state": "ready", "perPage": 100}),
            "models": ("/v2/models", {"page": 1, "perPage": 100}),
            "instances": ("/v2/model-instances", {"page": 1, "perPage": 100}),
            "instances ?model_id": ("/v2/model-instances", {"model_id": some_model, "perPage": 100}),
            "instances ?worker_id": ("/v2/model-instances", {"worker_id": some_worker, "perPage": 100}),
        }
        result["lists"] = {
            name: await timed_gets(admin, path, params, args.requests)
            for name, (path, params) in queries.items()
        }

        creates = []
        for c in range(args.creates):
            body = {"name": f"scale-create-{c}", "backend": "custom", "run_command": "engine --port {port}"}
            body["replicas"] = 0
            started = time.perf_counter()
            response = await admin.post("/v2/models", json=body)
            creates.append(time.perf_counter() - started)
            response.raise_for_status()
            (await admin.delete(f"/v2/models/{response.json()['id']}")).raise_for_status()
        result["create"] = creates

        result["watch"] = await watch_latency(server.url, admin.cookies, args.watchers, args.changes)

        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks = []
        await asyncio.gather(*(worker.http.aclose() for worker in workers))
        await admin.aclose()
        responder.close()
    finally:
        for task in tasks:
            task.cancel()
        stop_server(server)

    if database_url:
        result["db_size"] = await postgres_size(database_url)
    else:
        db = Path(data_dir, "database.db")
        result["db_size"] = sum(p.stat().st_size for p in db.parent.glob("database.db*"))
    restarted, result["start_full"] = start_server(data_dir, free_port(), database_url, args.tree)
    stop_server(restarted)
    if args.keep:
        print(f"data dir kept: {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)
    return result


def ms(value: float) -> str:
    return "timeout" if value == float("inf") else f"{value * 1000:.1f} ms"


def table(database: str, results: dict[int, dict[str, Any]]) -> str:
    sizes = sorted(results)
    rows: list[tuple[str, list[str], str]] = []

    def add(name: str, goal: str, fmt: Any) -> None:
        rows.append((name, [fmt(results[n]) for n in sizes], goal))

    add("instances running", "all", lambda r: f"{r['running']}/{r['instances']}")
    add("placed to running", "-", lambda r: f"{r['settle']:.0f} s")
    add("server CPU, steady", "<= 25 % (1,000)", lambda r: f"{r['cpu']:.0f} %")
    add("server RSS, steady", "-", lambda r: f"{r['rss'] / 2**20:.0f} MiB")
    add("RSS growth in window", "flat", lambda r: f"{r['rss_growth'] / 2**20:+.1f} MiB")
    add("heartbeat p50", "-", lambda r: ms(pct(r["heartbeats"], 0.5)))
    add("heartbeat p99", "<= 20 ms", lambda r: ms(pct(r["heartbeats"], 0.99)))
    add("heartbeats (errors)", "0 errors", lambda r: f"{len(r['heartbeats'])} ({r['heartbeat_errors']})")
    for name in next(iter(results.values()))["lists"]:
        add(
            f"GET {name} p50/p95",
            "-" if name == BASELINE else "p95 <= 50 ms",
            lambda r, name=name: f"{ms(pct(r['lists'][name], 0.5))} / {ms(pct(r['lists'][name], 0.95))}",
        )
    add("create model median", "<= 5 ms", lambda r: ms(statistics.median(r["create"])))
    add("change to all watchers p50", "-", lambda r: ms(pct(r["watch"], 0.5)))
    add("change to all watchers p99", "<= 100 ms", lambda r: ms(pct(r["watch"], 0.99)))
    add("database size", "-", lambda r: f"{r['db_size'] / 2**20:.1f} MiB")
    add("start to /healthz, empty", "<= 1 s", lambda r: f"{r['start_empty']:.2f} s")
    add("start to /healthz, full", "<= 1 s", lambda r: f"{r['start_full']:.2f} s")
    add("idle RSS (empty server)", "<= 120 MB", lambda r: f"{r['idle_rss'] / 1e6:.0f} MB")

    header = ["figure"] + [f"N={n}" for n in sizes] + ["goal"]
    lines = [[name, *values, goal] for name, values, goal in rows]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    out = [f"{database}:", "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) + " |")
    return "\n".join(out)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100,300,1000", help="numbers of workers, comma-separated")
    parser.add_argument("--db", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--instances-per-worker", type=int, default=10)
    parser.add_argument("--window", type=float, default=30.0, help="seconds of steady state measured")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="GETs per list query")
    parser.add_argument("--creates", type=int, default=20)
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs")
    parser.add_argument(
        "--tree", help="run the server from this source tree (e.g. `git archive` of a commit)"
    )
    parser.add_argument("--postgres-url", default=os.environ.get("GPUSTACK_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    databases = [d.strip() for d in args.db.split(",")]
    if "postgres" in databases and not args.postgres_url:
        env = {**os.environ, "GPUSTACK_TEST_POSTGRES_DB": "gpustack_scale"}
        line = subprocess.run(  # noqa: ASYNC221
            ["bash", str(ROOT / "scripts" / "postgres.sh")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        args.postgres_url = line.strip().split("=", 1)[1].strip("'\"")
    tables = []
    for database in databases:
        results = {}
        for n in sizes:
            results[n] = await run_size(n, database, args)
            print(table(database, results), flush=True)
        tables.append(table(database, results))
        print(tables[-1], flush=True)
    print()
    print(f"{os.cpu_count()} CPUs, shared with the simulated workers (this process); figures are noisy.")
    print("\n\n".join(tables))


if __name__ == "__main__":
    asyncio.run(main())
