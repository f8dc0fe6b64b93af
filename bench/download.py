"""Model downloads: our downloader against huggingface_hub's own hf_hub_download of the same file from the
same loopback hub, in one run; and deploy → running from the Hugging Face source when the files are
already cached, against the engine's own time to ready.

Usage: python bench/download.py [--size-mib 256] [--runs 3] [--skip-deploy]

1. Throughput. A Hugging Face stand-in (tests/fixtures/hubs.py, in its own process, no throttle) serves a
   file of random bytes with its LFS sha256. Runs alternate: ours (FileManager.ensure: the listing through
   huggingface_hub, the download with its sha256 check, the manifest) and hf_hub_download (its metadata
   request and download), each into a fresh cache. Goal (issue 11): ours >= 90 % of hf_hub_download's.
2. Cached deploy. A gpustack server with its embedded worker and HF_ENDPOINT at the stand-in serving
   SmolLM2's GGUF: one deployment downloads it, then each run deploys it again (files kept from the
   deleted model) and is timed to running, and the engine's logged command is started by hand and timed
   to its /health. Goal: the engine's own load time + 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import engine_startup  # noqa: E402 - bench/engine_startup.py: by_hand, deploy
from stubcluster import free_port, login, model_path, start_gpustack, stop_gpustack, wait_worker_ready  # noqa: E402

from gpustack.schemas.models import ModelSpec  # noqa: E402
from gpustack.sources.base import SourceSettings  # noqa: E402
from gpustack.worker.files.manager import FileManager  # noqa: E402

REPO = "bench/model-GGUF"
FILE = "model-Q4_K_M.gguf"
SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
_HUB = """
import sys, time
from tests.fixtures.hubs import HubState, hub_server
state = HubState(repos=dict(arg.split("=", 1) for arg in sys.argv[1:]))
with hub_server(state) as endpoint:
    print(endpoint, flush=True)
    while True:
        time.sleep(3600)
"""


class Hub:
    """The stand-in in a process of its own, so that serving does not share the downloader's GIL."""

    def __init__(self, repos: dict[str, Path]) -> None:
        args = [f"{repo}={folder}" for repo, folder in repos.items()]
        self.process = subprocess.Popen(
            [sys.executable, "-c", _HUB, *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.endpoint = self.process.stdout.readline().strip()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)


class _Server:
    async def claim_model_file(self, claim: object) -> dict[str, int]:
        return {"id": 0}

    async def report_model_file(self, file_id: int, update: object) -> None:
        return None


def ours(endpoint: str, cache: Path) -> float:
    spec = ModelSpec.model_validate(
        {"source": "huggingface", "huggingface_repo_id": REPO, "huggingface_filename": FILE}
    )
    manager = FileManager(str(cache), SourceSettings.of(None, {"HF_ENDPOINT": endpoint}), _Server())
    began = time.perf_counter()
    asyncio.run(manager.ensure(spec, 1))
    return time.perf_counter() - began


def theirs(endpoint: str, cache: Path) -> float:
    from huggingface_hub import hf_hub_download

    began = time.perf_counter()
    hf_hub_download(REPO, FILE, endpoint=endpoint, cache_dir=str(cache))
    return time.perf_counter() - began


def throughput(size_mib: int, runs: int, root: Path) -> None:
    folder = root / "hub"
    folder.mkdir()
    with open(folder / FILE, "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    hub = Hub({REPO: folder})
    times: dict[str, list[float]] = {"ours (FileManager)": [], "hf_hub_download": []}
    try:
        theirs(hub.endpoint, root / "warm")  # the hub hashes the file once, for both
        shutil.rmtree(root / "warm")
        for run in range(runs):
            for name, download in (("ours (FileManager)", ours), ("hf_hub_download", theirs)):
                cache = root / f"cache-{run}-{len(times[name])}-{name[:4]}"
                times[name].append(download(hub.endpoint, cache))
                shutil.rmtree(cache)
    finally:
        hub.stop()
    print(f"throughput: {size_mib} MiB from a loopback Hugging Face stand-in, {runs} runs each, alternating")
    print(f"{'downloader':<20} {'median s':>9} {'MiB/s (median)':>15} {'MiB/s (best)':>13}")
    rates = {}
    for name, seconds in times.items():
        rates[name] = size_mib / statistics.median(seconds)
        best = size_mib / min(seconds)
        print(f"{name:<20} {statistics.median(seconds):>9.2f} {rates[name]:>15.0f} {best:>13.0f}")
    print(
        f"ours / hf_hub_download: {rates['ours (FileManager)'] / rates['hf_hub_download']:.0%} (goal >= 90 %)"
    )


def cached_deploy(runs: int, root: Path) -> None:
    model = model_path()
    folder = root / "smol"
    folder.mkdir()
    (folder / SMOL_FILE).symlink_to(model)
    hub = Hub({SMOL_REPO: folder})
    data_dir = root / "gpustack"
    port, worker_port, low = free_port(), free_port(), 46100
    out = open(root / "gpustack.out", "wb")  # noqa: SIM115 - handed to the child
    process = start_gpustack(
        data_dir, port, worker_port, (low, low + 16), "--disable-metrics", out=out,
        env={"GPUSTACK_HEARTBEAT_INTERVAL": "1", "HF_ENDPOINT": hub.endpoint},
    )  # fmt: skip
    server = f"http://127.0.0.1:{port}"
    body = {
        "source": "huggingface",
        "huggingface_repo_id": SMOL_REPO,
        "huggingface_filename": "*Q4_1.gguf",
        "backend_parameters": ["--ctx-size", "512", "--parallel", "1"],
    }
    managed, manual = [], []
    try:
        admin = login(server, timeout=60, ready_s=90)
        wait_worker_ready(admin)
        first, _ = engine_startup.deploy(admin, "smol-download", body)  # downloads; the files stay
        for run in range(runs):
            elapsed, instance = engine_startup.deploy(admin, f"smol-{run}", body)
            log = (data_dir / "log" / "serve" / f"{instance['id']}.log").read_text(errors="replace")
            command = shlex.split(engine_startup._STARTS.findall(log)[-1])
            managed.append(elapsed)
            manual.append(engine_startup.by_hand(command, root))
    finally:
        stop_gpustack(process, 60)
        out.close()
        hub.stop()
    overhead = [m - h for m, h in zip(managed, manual, strict=True)]
    print("\ncached deploy: SmolLM2 (94 MiB) from the Hugging Face source")
    print(f"first deploy, with the download: {first:.2f} s")
    print(f"{'runs':>4} {'deploy→running s':>17} {'engine by hand s':>17} {'overhead s (median, max)':>25}")
    spread = f"{statistics.median(overhead):.2f}, {max(overhead):.2f}"
    print(f"{runs:>4} {statistics.median(managed):>17.2f} {statistics.median(manual):>17.2f} {spread:>25}")
    print("goal: overhead <= 1 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-deploy", action="store_true", help="only the throughput comparison")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gpustack-download-"))
    try:
        throughput(args.size_mib, args.runs, root)
        if not args.skip_deploy:
            cached_deploy(args.runs, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
