"""What a password-guessing flood does to everyone else: /healthz and an API-key request, timed while
the server is idle (baseline) and while N guessers post wrong passwords as fast as they can.

    .venv/bin/python bench/login_flood.py [--guessers 20] [--seconds 10]

Starts a real `gpustack start --disable-worker` on a free port with a temporary data dir. Prints
latency percentiles of both probes in each phase, and how the guesses were answered (401 after a real
password check, 429 throttled before any).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

import httpx

PASSWORD = "bench-admin-pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def probe(client: httpx.AsyncClient, path: str, seconds: float) -> list[float]:
    """Sequential requests for `seconds`; their latencies in ms."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        response = await client.get(path)
        latencies.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200, response.text
        await asyncio.sleep(0.02)
    return latencies


async def guess(client: httpx.AsyncClient, stop: asyncio.Event, answers: Counter) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        response = await client.post("/auth/login", json={"username": "admin", "password": f"wrong-{n}"})
        answers[response.status_code] += 1


async def phase(
    url: str, key: str, guessers: int, seconds: float
) -> tuple[list[float], list[float], Counter]:
    answers: Counter = Counter()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=guessers + 4)
    async with (
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as flood,
        httpx.AsyncClient(base_url=url, timeout=60) as health,
        httpx.AsyncClient(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as api,
    ):
        tasks = [asyncio.create_task(guess(flood, stop, answers)) for _ in range(guessers)]
        healthz, models = await asyncio.gather(
            probe(health, "/healthz", seconds), probe(api, "/v2/models", seconds)
        )
        stop.set()
        await asyncio.gather(*tasks)
    return healthz, models, answers


async def measure(url: str, key: str, guessers: int, seconds: float) -> None:
    rows = []
    for name, count in (("idle (baseline)", 0), (f"{guessers} guessers", guessers)):
        healthz, models, answers = await phase(url, key, count, seconds)
        rows.append((name, healthz, models, answers))
    print(f"{'phase':<18} {'healthz p50':>11} {'p99':>8} {'/v2/models p50':>15} {'p99':>8}  guesses answered")
    for name, healthz, models, answers in rows:
        answered = ", ".join(f"{code}: {n}" for code, n in sorted(answers.items())) or "-"
        print(
            f"{name:<18} {percentile(healthz, 0.5):>9.1f}ms {percentile(healthz, 0.99):>6.1f}ms "
            f"{percentile(models, 0.5):>13.1f}ms {percentile(models, 0.99):>6.1f}ms  {answered}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guessers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen(
            [sys.executable, "-m", "gpustack", "start", "--data-dir", data, "--host", "127.0.0.1",
             "--port", str(port), "--disable-worker", "--bootstrap-password", PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
        )  # fmt: skip
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            with httpx.Client(base_url=url, timeout=30) as admin:
                admin.post("/auth/login", json={"username": "admin", "password": PASSWORD}).raise_for_status()
                key = admin.post("/v2/api-keys", json={"name": "bench"}).json()["value"]
            asyncio.run(measure(url, key, args.guessers, args.seconds))
        finally:
            server.terminate()
            server.wait(20)


if __name__ == "__main__":
    main()
