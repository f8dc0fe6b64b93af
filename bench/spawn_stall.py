"""How long starting child processes holds up the worker's event loop: Popen with a preexec_fn (how
engines were started before) against worker/spawn.py's plan (setpriv, no Python in the child), in one run.

    .venv/bin/python bench/spawn_stall.py [--starts 32] [--busy 8] [--ballast-mib 300]

A ticker coroutine wakes every millisecond while the starts run one after another; every gap over 5 ms
is time the loop could not serve (health checks, the gateway). --busy starts that many CPU-bound
processes for the run, as engines loading on a small host do; --ballast-mib makes this process as big
as a server is, since fork copies its page tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpustack.worker.spawn import die_with_parent, spawn_plan  # noqa: E402

CHILD = ["/bin/sleep", "60"]


async def before() -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *CHILD, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, preexec_fn=die_with_parent
    )


async def now() -> asyncio.subprocess.Process:
    plan = await asyncio.to_thread(spawn_plan, CHILD)
    return await asyncio.create_subprocess_exec(
        *plan.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, **plan.options
    )


async def measure(
    start: Callable[[], Awaitable[asyncio.subprocess.Process]], starts: int
) -> dict[str, float]:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            current = time.perf_counter()
            gaps.append(current - last)
            last = current

    ticking = asyncio.create_task(ticker())
    children = []
    began = time.perf_counter()
    for _ in range(starts):
        children.append(await start())
    elapsed = time.perf_counter() - began
    await asyncio.sleep(0.05)
    done.set()
    await ticking
    for child in children:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
    stalls = [gap for gap in gaps if gap > 0.005]
    return {
        "per start ms": elapsed / starts * 1000,
        "stalled ms": sum(stalls) * 1000,
        "longest ms": max(gaps) * 1000,
        "median gap ms": statistics.median(gaps) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=32)
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes running meanwhile")
    parser.add_argument("--ballast-mib", type=int, default=300)
    args = parser.parse_args()
    ballast = bytearray(args.ballast_mib * 1024 * 1024)
    for index in range(0, len(ballast), 4096):
        ballast[index] = 1  # touched, so that its pages are mapped
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        rows = []
        for _ in range(2):  # interleaved, so that drift hits both
            rows.append(("preexec_fn (before)", asyncio.run(measure(before, args.starts))))
            rows.append(("spawn_plan (now)", asyncio.run(measure(now, args.starts))))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    plan = spawn_plan(CHILD)
    print(
        f"{args.starts} starts, {args.busy} busy processes, {args.ballast_mib} MiB process; "
        f"plan: {' '.join(plan.argv[:3])}"
    )
    print(f"{'how':22} {'per start ms':>13} {'stalled ms':>11} {'longest ms':>11} {'median gap ms':>14}")
    for name, figures in rows:
        print(f"{name:22} " + " ".join(f"{figures[key]:>{len(key)}.1f}" for key in figures))


if __name__ == "__main__":
    main()
