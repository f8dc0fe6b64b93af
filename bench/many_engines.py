"""Whether the server stays responsive while many CPU engines start: a real `gpustack start` (server and
embedded worker) deploys N replicas of SmolLM2-135M while /healthz of the server and of the worker are
timed every 100 ms and the instance list is read every second; then the model is deleted once.

    .venv/bin/python bench/many_engines.py [--replicas 32] [--baseline-tree /path/to/older/checkout]

With --baseline-tree, the same run is made first with that checkout's code (`python -m gpustack` from
its directory), so that both are measured on the same machine under the same load. Prints health-check
latencies, failed API reads, how long until every replica ran, the deletion's answer, and how many
"database is locked" lines and tracebacks the log holds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from stubcluster import free_port, login, model_path, start_gpustack, stop_gpustack

PROBE_TIMEOUT = 10.0


@dataclass
class Probe:
    """Times GET url every 100 ms in a thread; a timeout counts as PROBE_TIMEOUT."""

    url: str
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT) as client:
            while not self.stop.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.latencies.append(time.perf_counter() - began)
                self.failures += not ok
                self.stop.wait(0.1)


def run_once(tree: Path, replicas: int) -> dict[str, str]:
    data_dir = Path(tempfile.mkdtemp(prefix="gpustack-many-"))
    port, worker_port, low = free_port(), free_port(), 45000
    log = open(data_dir / "gpustack.out", "wb")  # noqa: SIM115 - handed to the child
    process = start_gpustack(data_dir, port, worker_port, (low, low + replicas + 8), out=log, cwd=tree)
    server = f"http://127.0.0.1:{port}"
    result: dict[str, str] = {}
    probes = [Probe(f"{server}/healthz"), Probe(f"http://127.0.0.1:{worker_port}/healthz")]
    try:
        admin = login(server, timeout=60, ready_s=90)
        threads = [threading.Thread(target=p.run, daemon=True) for p in probes]
        for thread in threads:
            thread.start()
        body = {
            "name": "smollm2",
            "local_path": model_path(),
            "replicas": replicas,
            "backend_parameters": ["--ctx-size", "512", "--parallel", "1"],
        }
        admin.post("/v2/models", json=body).raise_for_status()
        began = time.monotonic()
        reads = failed_reads = running = 0
        states: dict[str, int] = {}
        while time.monotonic() - began < 600:
            reads += 1
            try:
                response = admin.get("/v2/model-instances", params={"perPage": 1000})
            except httpx.HTTPError:
                failed_reads += 1
                continue
            if response.status_code != 200:
                failed_reads += 1
                continue
            items = response.json()["items"]
            states = {}
            for item in items:
                states[item["state"]] = states.get(item["state"], 0) + 1
            running = states.get("running", 0)
            if running == replicas or (items and all(i["state"] in ("running", "error") for i in items)):
                break
            time.sleep(1)
        result["all running after s"] = f"{time.monotonic() - began:.0f}" if running == replicas else "never"
        result["states at the end"] = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        result["failed instance reads"] = f"{failed_reads} of {reads}"
        for probe in probes:
            probe.stop.set()
        for thread in threads:
            thread.join()
        for name, probe in zip(("server", "worker"), probes, strict=True):
            ordered = sorted(probe.latencies)
            result[f"{name} /healthz p50/p99/max ms"] = (
                f"{statistics.median(ordered) * 1000:.0f} / {ordered[int(len(ordered) * 0.99)] * 1000:.0f} / "
                f"{ordered[-1] * 1000:.0f}"
            )
            result[f"{name} /healthz failed"] = f"{probe.failures} of {len(ordered)}"
        model_id = admin.get("/v2/models").json()["items"][0]["id"]
        deletion = admin.delete(f"/v2/models/{model_id}")
        result["delete model answer"] = f"{deletion.status_code} {deletion.text[:120]}"
    finally:
        stop_gpustack(process, 60)
        log.close()
    text = (data_dir / "gpustack.out").read_text(errors="replace")
    result["log: database is locked"] = str(text.count("database is locked"))
    result["log: tracebacks"] = str(text.count("Traceback (most recent call last)"))
    result["log"] = str(data_dir / "gpustack.out")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--baseline-tree", type=Path, help="an older checkout to measure first")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    runs = [("baseline", args.baseline_tree)] if args.baseline_tree else []
    runs.append(("this tree", here))
    results = {name: run_once(tree, args.replicas) for name, tree in runs}
    print(f"\n{args.replicas} replicas of SmolLM2-135M on {os.cpu_count()} CPUs\n")
    keys = list(next(iter(results.values())))
    print(f"{'':32}" + "".join(f"{name:>28}" for name in results))
    for key in keys:
        print(f"{key:32}" + "".join(f"{results[name].get(key, ''):>28}" for name in results))


if __name__ == "__main__":
    main()
