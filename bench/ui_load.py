"""The web UI's first page load, cold, from a local server, the size of its build, and how its pages
render a large cluster.

    .venv/bin/python bench/ui_load.py [--runs 5] [--workers 1000] [--instances 10000]

Starts a real `gpustack start --disable-worker` on a free port with a temporary data dir, then opens the
UI in Debian's chromium (driven by Playwright) with a fresh profile each run, so nothing is cached: the
time until the login form is on screen, and what crossed the wire. The baseline, in the same run and the
same fresh browser, is a navigation to the server's /healthz (a few bytes of text): what the browser and
the server cost before the UI adds anything. Goals: first load under 1 s, build under 1.5 MB gzipped.

Large cluster: the pages are served by the same server, but the API answers are synthetic (Playwright
answers /v2 and /auth in the browser): a watch snapshot of 1,000 workers with 8 GPUs each, 1,000 models
and 10,000 instances, then 10,000 state updates in one stream. It times each page until its first rows
show, the updates until the last is on screen, and a page change of the models table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "gpustack" / "server" / "static"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOAD_GOAL_S = 1.0
SIZE_GOAL = 1.5 * 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_sizes() -> tuple[int, int, int]:
    """(files, bytes, gzipped bytes) of the build: each file's .gz copy where the build made one."""
    files = raw = packed = 0
    for path in STATIC.rglob("*"):
        if not path.is_file() or path.suffix == ".gz" or path.name.startswith("."):
            continue
        files += 1
        data = path.read_bytes()
        raw += len(data)
        gz = path.with_name(path.name + ".gz")
        packed += gz.stat().st_size if gz.is_file() else len(gzip.compress(data, 9))
    return files, raw, packed


def cold_load(playwright, executable: str, url: str, ready_selector: str | None) -> tuple[float, int, int]:
    """Seconds from navigation until `ready_selector` shows (or the load event); bytes and requests."""
    with tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            transferred: list[int] = []
            page.on(
                "requestfinished", lambda request: transferred.append(request.sizes()["responseBodySize"])
            )
            start = time.perf_counter()
            page.goto(url, wait_until="load")
            if ready_selector:
                page.wait_for_selector(ready_selector, state="visible")
            elapsed = time.perf_counter() - start
            page.wait_for_load_state("networkidle")
            return elapsed, sum(transferred), len(transferred)
        finally:
            context.close()


# --- a large cluster, answered in the browser -------------------------------------------------------------

NOW = "2026-01-01T00:00:00Z"
GiB = 1024**3


def _worker(i: int, gpus: int) -> dict:
    name = f"worker-{i:04d}"
    return {
        "id": i, "name": name, "hostname": name, "ip": f"10.0.{i // 250}.{i % 250}", "port": 10150,
        "labels": {"os": "linux", "rack": f"r{i % 20}"}, "state": "ready" if i % 50 else "not_ready",
        "state_message": "" if i % 50 else "no heartbeat for 95 s", "heartbeat_interval": 5,
        "last_heartbeat_at": NOW, "created_at": NOW, "updated_at": NOW,
        "system_reserved": {"ram": 2 * GiB, "vram": GiB},
        "status": {
            "cpu": {"total": 64, "utilization_rate": 23.0},
            "memory": {"total": 512 * GiB, "used": 100 * GiB, "allocated": 0, "utilization_rate": 19.5,
                       "is_unified_memory": False},
            "swap": {"total": 0, "used": 0}, "filesystem": [],
            "os": {"name": "Ubuntu", "version": "22.04"},
            "kernel": {"name": "Linux", "release": "6.8", "version": "", "architecture": "x86_64"},
            "uptime": {"uptime": 1000, "boot_time": NOW},
            "gpu_devices": [
                {"index": g, "name": "NVIDIA H100 80GB HBM3", "vendor": "NVIDIA", "type": "cuda", "uuid": "",
                 "id": f"{name}:cuda:{g}", "virtual": False, "temperature": 45.0,
                 "memory": {"total": 80 * GiB, "used": 40 * GiB, "allocated": 0, "utilization_rate": 50.0,
                            "is_unified_memory": False},
                 "core": {"total": 132, "utilization_rate": 60.0}}
                for g in range(gpus)
            ],
        },
    }  # fmt: skip


def _model(i: int, replicas: int) -> dict:
    return {
        "id": i, "name": f"model-{i:04d}", "description": "", "source": "local_path",
        "local_path": f"/models/model-{i:04d}.gguf", "backend": "llama-box", "backend_version": None,
        "backend_parameters": [], "env": {}, "replicas": replicas, "ready_replicas": replicas,
        "placement_strategy": "spread", "worker_selector": {}, "gpu_selector": None, "cpu_offloading": True,
        "distributed_inference_across_workers": True, "restart_on_error": True,
        "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip


def _instance(i: int, model_id: int, workers: int, state: str) -> dict:
    worker = i % workers + 1
    return {
        "id": i, "name": f"model-{model_id:04d}-{i:08x}", "model_id": model_id,
        "model_name": f"model-{model_id:04d}",
        "worker_id": worker, "worker_name": f"worker-{worker:04d}", "worker_ip": "10.0.0.1", "port": 40000,
        "pid": 1000 + i, "state": state, "state_message": "" if state == "running" else "waiting for a GPU",
        "restart_count": 0, "last_restart_at": None, "gpu_indexes": [i % 8],
        "computed_resource_claim": {"ram": GiB, "vram": {str(i % 8): 20 * GiB}}, "subordinate_workers": [],
        "placement": None, "resolved_path": None, "created_at": NOW, "updated_at": NOW,
    }  # fmt: skip


def _ndjson(*events: dict) -> str:
    return "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events)


class SyntheticCluster:
    """Answers the UI's /v2 and /auth calls in the browser, as the server would for a large cluster."""

    def __init__(self, workers: int, instances: int) -> None:
        models = max(1, instances // 10)
        per_model = instances // models
        self.workers = _ndjson({"type": "snapshot", "items": [_worker(i, 8) for i in range(1, workers + 1)]})
        self.models = _ndjson(
            {"type": "snapshot", "items": [_model(i, per_model) for i in range(1, models + 1)]}
        )
        pending = [
            _instance(i, (i - 1) // per_model + 1, workers, "pending") for i in range(1, instances + 1)
        ]
        # Running arrives in reverse, so the first row (on the first page) is the last one updated.
        updates = [{"type": "updated", "data": {**item, "state": "running"}} for item in reversed(pending)]
        self.instances = _ndjson({"type": "snapshot", "items": pending}, *updates)
        admin = {"id": 1, "username": "admin", "full_name": "", "is_admin": True, "created_at": NOW}
        self.served: set[str] = set()
        self.me = json.dumps({**admin, "require_password_change": False, "updated_at": NOW})

    def handle(self, route) -> None:
        path = re.sub(r"^https?://[^/]+", "", route.request.url)
        bodies = {
            "/v2/users/me": (self.me, "application/json"),
            "/v2/workers?watch=true": (self.workers, "application/x-ndjson"),
            "/v2/models?watch=true": (self.models, "application/x-ndjson"),
            "/v2/model-instances?watch=true": (self.instances, "application/x-ndjson"),
        }
        if path.endswith("watch=true") and path in self.served:
            return  # a watch that reconnects stays open with nothing new, as a quiet server's would
        if path in bodies:
            body, kind = bodies[path]
            self.served.add(path)
            route.fulfill(status=200, body=body, headers={"content-type": kind})
        else:
            body = '{"code":404,"reason":"NotFound","message":"no such route"}'
            route.fulfill(status=404, body=body, headers={"content-type": "application/json"})


def large_cluster(
    playwright, executable: str, url: str, workers: int, instances: int
) -> list[tuple[str, float]]:
    cluster = SyntheticCluster(workers, instances)
    timings: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
        )  # fmt: skip
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(120_000)
            page.route(re.compile(r"/(v2|auth)/"), cluster.handle)

            def timed(name: str, action) -> None:
                start = time.perf_counter()
                action()
                timings.append((name, time.perf_counter() - start))

            def menu(label: str, selector: str) -> None:
                page.get_by_test_id("main-menu").get_by_text(label, exact=True).click()
                page.wait_for_selector(selector, state="visible")

            running = '[data-testid^="instance-state-model-0001-"] >> text=Running'
            timed(
                f"dashboard: {workers} workers, {workers * 8} GPUs, {instances} instances + updates",
                lambda: (
                    page.goto(url + "/dashboard"),
                    page.wait_for_selector(f'text="/ {instances}"', state="visible"),
                    page.wait_for_selector(f'text="/ {workers}"', state="visible"),
                ),
            )
            timed(
                "menu → Models, until the first model's instance shows Running",
                lambda: menu("Models", running),
            )
            timed(
                "models table: next page",
                lambda: (
                    page.locator(".ant-pagination-next").first.click(),
                    page.wait_for_selector('[data-testid="model-model-0011"]', state="visible"),
                ),
            )
            timed(
                "menu → Workers, until the first worker shows",
                lambda: menu("Workers", '[data-testid="worker-worker-0001"]'),
            )
            timed(
                "workers table: next page",
                lambda: (
                    page.locator(".ant-pagination-next").first.click(),
                    page.wait_for_selector('[data-testid="worker-worker-0021"]', state="visible"),
                ),
            )
            heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : 0")
            timings.append(("JS heap after all (MiB)", heap / 1024 / 1024 / 1000))
        finally:
            context.close()
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=10000)
    args = parser.parse_args()
    if not (STATIC / "index.html").is_file():
        sys.exit("no UI build in gpustack/server/static: run scripts/build-ui.sh (or scripts/setup.sh)")
    executable = os.environ.get("GPUSTACK_TEST_CHROMIUM") or shutil.which("chromium")
    if not executable:
        sys.exit("chromium not found: run scripts/install-chromium.sh")
    from playwright.sync_api import sync_playwright

    files, raw, packed = build_sizes()
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        log = open(Path(data) / "server.log", "wb")  # noqa: SIM115 - handed to the child
        server = subprocess.Popen(
            [sys.executable, "-m", "gpustack", "start", "--disable-worker", "--data-dir", f"{data}/d",
             "--host", "127.0.0.1", "--port", str(port), "--bootstrap-password", "bench-admin-pass"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            with sync_playwright() as playwright:
                # the server's and chromium's warm-up
                cold_load(playwright, executable, url + "/healthz", None)
                baseline = [
                    cold_load(playwright, executable, url + "/healthz", None) for _ in range(args.runs)
                ]
                ui = [
                    cold_load(playwright, executable, url + "/", '[data-testid="login"]')
                    for _ in range(args.runs)
                ]
                scale = large_cluster(playwright, executable, url, args.workers, args.instances)
        finally:
            server.terminate()
            server.wait(30)
            log.close()

    def row(name: str, runs: list[tuple[float, int, int]]) -> str:
        times = [r[0] * 1000 for r in runs]
        return (
            f"{name:<36} {statistics.median(times):>9.0f} {max(times):>9.0f} "
            f"{runs[0][1] / 1024:>12.1f} {runs[0][2]:>9}"
        )

    print(f"cold first load, fresh chromium profile each run ({args.runs} runs), local server")
    print(f"{'page':<36} {'median ms':>9} {'max ms':>9} {'KiB on wire':>12} {'requests':>9}")
    print(row("baseline: /healthz (text)", baseline))
    print(row("UI: / until the login form shows", ui))
    ui_median = statistics.median(r[0] for r in ui)
    print()
    print("large cluster (synthetic API answers, rendered by the real build)")
    for name, seconds in scale:
        if name.startswith("JS heap"):
            print(f"{name:<52} {seconds * 1000:>9.0f}")
        else:
            print(f"{name:<52} {seconds * 1000:>9.0f} ms")
    print()
    print(f"build: {files} files, {raw / 1024:.0f} KiB, {packed / 1024:.0f} KiB gzipped")
    print(
        f"goals: first load < {LOAD_GOAL_S:.0f} s: {'met' if ui_median < LOAD_GOAL_S else 'MISSED'} "
        f"({ui_median * 1000:.0f} ms); build < 1.5 MB gzipped: {'met' if packed < SIZE_GOAL else 'MISSED'} "
        f"({packed / 1024 / 1024:.2f} MB)"
    )


if __name__ == "__main__":
    main()
