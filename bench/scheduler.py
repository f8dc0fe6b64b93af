"""How fast the scheduler places instances on a large mixed cluster.

    .venv/bin/python bench/scheduler.py [--workers 500] [--instances 2000] [--seed 7] [--classic]

A synthetic cluster: workers with 8 GPUs of mixed vendors and sizes (NVIDIA 24/48/80 GiB, AMD 192 GiB,
Ascend 64 GiB), some Macs with unified memory, some CPU-only boxes. Instances of mixed models and
backends (llama-box GGUF of 1B-70B and DeepSeek R1 at 2 bits, built from real GGUF headers and the real
estimator, some with the user's -ngl; vLLM, some with -tp 2, and MindIE from config-only checkpoints;
vox-box) are placed one after another, each seeing the claims of those before it, as the server does.
Printed: placements per second and the 50th/99th percentile of one decision, next to a baseline
measured in the same run: one pass over every GPU of the cluster doing nothing but compare free memory
with a number (the floor any placement that looks at every GPU pays). --classic places the mix of
earlier versions of this script (no R1, -ngl or -tp), to compare with their figures.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.estimate.mindie import estimate_mindie, parse_mindie_options  # noqa: E402
from gpustack.estimate.vllm import estimate_vllm, parse_vllm_options  # noqa: E402
from gpustack.scheduler.candidates import Placement  # noqa: E402
from gpustack.scheduler.cluster import WorkerSnapshot  # noqa: E402
from gpustack.scheduler.needs import mindie_need, vllm_need  # noqa: E402
from gpustack.scheduler.place import place  # noqa: E402
from gpustack.scheduler.request import LlamaBoxNeed, Need, PlacementRequest, SingleDeviceNeed  # noqa: E402
from gpustack.schemas.models import PlacementStrategy  # noqa: E402
from tests.scheduler.fixtures import GiB, deepseek_r1_iq2, estimate, worker, write_llama  # noqa: E402
from tests.scheduler.test_place import llama_config  # noqa: E402

GPU_KINDS = [
    ("cuda", "NVIDIA GeForce RTX 4090", 24 * GiB),
    ("cuda", "NVIDIA L40S", 48 * GiB),
    ("cuda", "NVIDIA A100-SXM4-80GB", 80 * GiB),
    ("rocm", "AMD Instinct MI300X", 192 * GiB),
    ("npu", "Ascend 910B3", 64 * GiB),
]


def cluster(count: int, rng: random.Random) -> list[WorkerSnapshot]:
    workers = []
    for i in range(count):
        roll = rng.random()
        if roll < 0.05:
            workers.append(
                worker(
                    i,
                    f"mac-{i}",
                    [("mps", "Apple M2 Ultra", 192 * GiB)],
                    192 * GiB,
                    os="darwin",
                    unified=True,
                )
            )
        elif roll < 0.10:
            workers.append(worker(i, f"cpu-{i}", [], 256 * GiB))
        else:
            kind = GPU_KINDS[rng.randrange(len(GPU_KINDS))]
            workers.append(worker(i, f"gpu-{i}", [kind] * 8, 1024 * GiB))
    return workers


def requests(directory: Path, count: int, rng: random.Random, classic: bool) -> list[PlacementRequest]:
    shapes = {
        "1b": dict(n_layer=16, n_embd=2048, n_head=32, n_head_kv=8, n_ff=8192),
        "8b": dict(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336),
        "32b": dict(n_layer=64, n_embd=5120, n_head=40, n_head_kv=8, n_ff=27648),
        "70b": dict(n_layer=80, n_embd=8192, n_head=64, n_head_kv=8, n_ff=28672),
    }
    paths = {name: write_llama(directory / f"{name}.gguf", **shape) for name, shape in shapes.items()}
    gguf = {name: LlamaBoxNeed(estimate(path)) for name, path in paths.items()}
    vllm_options, mindie_options = parse_vllm_options([]), parse_mindie_options([])
    vllm = vllm_need(estimate_vllm(llama_config(), vllm_options), vllm_options, ray=False)
    mindie = mindie_need(estimate_mindie(llama_config(), mindie_options), mindie_options)
    vox = SingleDeviceNeed(vram=3 * GiB, ram_on_gpu=GiB, ram_on_cpu=5 * GiB)
    pool: list[tuple[str, Need]] = [
        ("llama-box", gguf["1b"]), ("llama-box", gguf["8b"]), ("llama-box", gguf["32b"]),
        ("llama-box", gguf["70b"]), ("vllm", vllm), ("ascend-mindie", mindie), ("vox-box", vox),
    ]  # fmt: skip
    if not classic:  # the searches added since: a large MoE over GPU sets, the user's -ngl and -tp
        tp2 = parse_vllm_options(["-tp", "2"])
        pool += [
            ("llama-box", LlamaBoxNeed(estimate(deepseek_r1_iq2(directory)))),
            ("llama-box", LlamaBoxNeed(estimate(paths["70b"], "-ngl", "40"))),
            ("vllm", vllm_need(estimate_vllm(llama_config(), tp2), tp2, ray=False)),
        ]
    made = []
    for i in range(count):
        backend, need = pool[rng.randrange(len(pool))]
        strategy = PlacementStrategy.BINPACK if rng.random() < 0.5 else PlacementStrategy.SPREAD
        made.append(PlacementRequest(f"model-{i}", backend, need, placement_strategy=strategy))
    return made


def baseline(workers: list[WorkerSnapshot], need: int) -> None:
    """The floor: look at every GPU once and compare its free memory."""
    best = None
    for w in workers:
        for gpu in w.gpus:
            if w.vram_free.get(gpu.index, 0) >= need and (best is None or gpu.total < best):
                best = gpu.total


def run(
    todo: list[PlacementRequest], workers: list[WorkerSnapshot]
) -> tuple[list[float], float, dict[str, int]]:
    timings, modes = [], {}
    began = time.perf_counter()
    for request in todo:
        start = time.perf_counter()
        result = place(request, workers)
        if isinstance(result, Placement):
            result.apply()
        timings.append((time.perf_counter() - start) * 1000)
        mode = result.mode if isinstance(result, Placement) else "refused"
        modes[mode] = modes.get(mode, 0) + 1
    return timings, time.perf_counter() - began, modes


def percentile(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description="scheduler placement speed")
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--classic", action="store_true", help="the mix of earlier versions of this script")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as directory:
        todo = requests(Path(directory), args.instances, rng, args.classic)
    workers = cluster(args.workers, rng)
    # The same instances on a cluster a tenth the size: it fills up, so later placements go through the
    # costlier tiers (several GPUs, RPC across workers, partial offload) and refusals with every reason.
    crowded = cluster(max(1, args.workers // 10), rng)
    gpus = sum(len(w.gpus) for w in workers)

    floor = []
    for _ in range(200):
        start = time.perf_counter()
        baseline(workers, 20 * GiB)
        floor.append((time.perf_counter() - start) * 1000)
    timings, elapsed, modes = run(todo, workers)
    crowded_timings, crowded_elapsed, crowded_modes = run(todo, crowded)

    print(f"\n{args.workers} workers, {gpus} GPUs; {args.instances} instances of mixed models and backends\n")
    print(f"{'':40}{'per second':>12}{'p50 ms':>10}{'p99 ms':>10}")
    rows = [
        ("baseline: one pass over all GPUs", 1000 / statistics.mean(floor), floor),
        ("placement (filter, fit, score)", args.instances / elapsed, timings),
        (f"crowded: {len(crowded)} workers", args.instances / crowded_elapsed, crowded_timings),
    ]
    for label, rate, values in rows:
        print(f"{label:40}{rate:>12.0f}{percentile(values, 0.5):>10.2f}{percentile(values, 0.99):>10.2f}")
    print(f"\np50 placement / p50 baseline: {percentile(timings, 0.5) / percentile(floor, 0.5):.1f}x")
    for label, counts in (("placed by mode", modes), ("crowded, by mode", crowded_modes)):
        print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
