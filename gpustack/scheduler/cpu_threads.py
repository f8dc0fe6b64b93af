"""CPU threads as a resource: what a llama.cpp engine that computes on the CPU claims, and how many a
worker can give.

llama.cpp runs every CPU graph with --threads workers that spin on barriers between operations, so two
busy engines whose threads outnumber the cores slow each other down far more than in proportion: a
thread that waits for a core holds every other thread of its engine at the next barrier. An engine that
computes on the CPU (CPU placements and partial offload) therefore claims its thread count, and the
claims on a worker may add up to at most CPU_OVERSUBSCRIPTION x its logical cores. Two is the bound: an
idle engine uses no CPU, so two engines that each use every core can share a worker (both at about
half speed when busy at once), while a third would already leave threads waiting for cores in every
barrier. An engine whose layers are all on GPUs uses its CPU threads only for the input embeddings and
claims none.
"""

from __future__ import annotations

# How many llama.cpp threads a worker may run per logical core (see above).
CPU_OVERSUBSCRIPTION = 2


def default_threads(logical_cores: int) -> int:
    """llama.cpp's default --threads without a CPU topology (common_cpu_get_num_physical_cores): every
    core up to 4, else half of them (one per physical core of a 2-way SMT CPU). The scheduler passes it
    explicitly, so what runs is what was claimed."""
    if logical_cores <= 0:
        return 0
    return logical_cores if logical_cores <= 4 else logical_cores // 2


def _resolve(threads: int, logical_cores: int) -> int:
    """llama.cpp reads -t 0 (or less) as every logical core."""
    return threads if threads > 0 else logical_cores


def thread_claim(threads: int | None, threads_batch: int | None, logical_cores: int) -> int:
    """Threads an engine on a worker with `logical_cores` claims: the most it runs at once, generation
    (-t, else llama.cpp's default for that worker) or prompt processing (-tb, else the same as -t).
    0 when the worker does not say how many cores it has and the user gave no number either."""
    generation = default_threads(logical_cores) if threads is None else _resolve(threads, logical_cores)
    batch = generation if threads_batch is None else _resolve(threads_batch, logical_cores)
    return max(generation, batch, 0)


def explicit_threads(threads: int | None, logical_cores: int) -> int | None:
    """The --threads the worker must pass so the engine runs with what was claimed: llama.cpp's default,
    computed here, when the user gave no -t (the engine's own count of physical cores may differ)."""
    if threads is not None or logical_cores <= 0:
        return None
    return default_threads(logical_cores)
