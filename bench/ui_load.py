"""The web UI's first page load, cold, from a local server, and the size of its build.

    .venv/bin/python bench/ui_load.py [--runs 5]

Starts a real `gpustack start --disable-worker` on a free port with a temporary data dir, then opens the
UI in Debian's chromium (driven by Playwright) with a fresh profile each run, so nothing is cached: the
time until the login form is on screen, and what crossed the wire. The baseline, in the same run and the
same fresh browser, is a navigation to the server's /healthz (a few bytes of text): what the browser and
the server cost before the UI adds anything. Goals: first load under 1 s, build under 1.5 MB gzipped.
"""

from __future__ import annotations

import argparse
import gzip
import os
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
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
                cold_load(
                    playwright, executable, url + "/healthz", None
                )  # the server's and chromium's warm-up
                baseline = [
                    cold_load(playwright, executable, url + "/healthz", None) for _ in range(args.runs)
                ]
                ui = [
                    cold_load(playwright, executable, url + "/", '[data-testid="login"]')
                    for _ in range(args.runs)
                ]
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
    print(f"build: {files} files, {raw / 1024:.0f} KiB, {packed / 1024:.0f} KiB gzipped")
    print(
        f"goals: first load < {LOAD_GOAL_S:.0f} s: {'met' if ui_median < LOAD_GOAL_S else 'MISSED'} "
        f"({ui_median * 1000:.0f} ms); build < 1.5 MB gzipped: {'met' if packed < SIZE_GOAL else 'MISSED'} "
        f"({packed / 1024 / 1024:.2f} MB)"
    )


if __name__ == "__main__":
    main()
