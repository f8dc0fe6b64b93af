"""One llama-box placement over a given set of devices: how many layers each takes, whether the host has
the RAM and CPU threads for the rest, the claims per worker and the engine arguments that make llama.cpp
do exactly that."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple

from gpustack.scheduler.candidates import Assignment, Bytes, Candidate, Rejections, score_key
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.cpu_threads import CPU_OVERSUBSCRIPTION, explicit_threads, thread_claim
from gpustack.scheduler.request import LlamaBoxNeed
from gpustack.schemas.models import PlacementStrategy, ResourceClaim
from gpustack.schemas.placement import LayerLayout, PlacementMode

Device = tuple[WorkerSnapshot, GPUSnapshot]


class Option(NamedTuple):
    """A placement that fits, before it becomes a Candidate: what scoring needs, and what building does."""

    host: WorkerSnapshot
    devices: list[Device]
    rpc: int
    counts: list[int]
    vram: list[int]
    ram: int
    threads: int
    load: int  # instances already on the workers it uses
    tightness: int  # VRAM left on its devices
    gpu_layers: int


class Pick:
    """The best option by the placement strategy's score (place._score's order), without building the
    others: a partial offload is possible on most workers of a cluster, and only one is chosen."""

    def __init__(self, strategy: PlacementStrategy) -> None:
        self.strategy = strategy
        self.best: Option | None = None
        self._key: tuple[int, int, int] | None = None

    def offer(self, option: Option | None) -> None:
        if option is None:
            return
        key = score_key(self.strategy, option.load, option.tightness, option.gpu_layers)
        if self._key is None or key < self._key:
            self.best, self._key = option, key


# Layer counts for devices of these capacities, of which the first `rpc` are RPC servers; None = no fit.
Split = Callable[[Sequence[int], int], "list[int] | None"]

THREADS_SHORT = (
    "worker {worker}: {free} of {total} CPU threads allocatable ({cores} cores x {factor}), needs {need} "
    "for llama.cpp's --threads"
)
# Unified memory: shrinking the GPU's share moves layers to RAM of the same pool, so only a few retries help.
UNIFIED_RETRIES = 4


def free_vram(device: Device) -> int:
    worker, gpu = device
    return worker.vram_free.get(gpu.index, 0)


class DeviceFit:
    """Builds llama-box candidates over device sets (RPC servers first, then the host's own GPUs, as
    llama.cpp orders them), with the host's RAM and CPU threads checked and every refusal recorded."""

    def __init__(self, need: LlamaBoxNeed, rejections: Rejections) -> None:
        self.estimate = need.estimate
        self.plan = need.planner
        self.layers = need.estimate.total_layers
        self.growth = need.estimate.growth_bytes
        self.user_threads, self.user_threads_batch = need.threads, need.threads_batch
        self.rejections = rejections
        self._settled: dict[Hashable, tuple[tuple[int, ...], int, tuple[int, ...]] | None] = {}

    def threads(self, worker: WorkerSnapshot) -> int:
        return thread_claim(self.user_threads, self.user_threads_batch, worker.cpu_cores)

    def engine_threads(self, worker: WorkerSnapshot) -> int | None:
        """The --threads the engine must be given so that it runs with what was claimed."""
        return explicit_threads(self.user_threads, worker.cpu_cores)

    def has_threads(self, worker: WorkerSnapshot, need: int) -> bool:
        """Whether the worker can give `need` more CPU threads; records why not."""
        if need <= worker.cpu_threads_free:
            return True
        self.rejections.add(
            THREADS_SHORT,
            worker=worker.name,
            free=max(worker.cpu_threads_free, 0),
            total=worker.cpu_threads_total,
            cores=worker.cpu_cores,
            factor=CPU_OVERSUBSCRIPTION,
            need=need,
        )
        self.rejections.suggest(
            "a smaller --threads (-t) in the backend parameters lets more instances share a worker's "
            f"cores: each one that computes on the CPU claims its threads, at most {CPU_OVERSUBSCRIPTION} "
            "per logical core in all"
        )
        return False

    def settle(
        self,
        devices: list[Device],
        rpc: int,
        split: Split,
        keep_empty: bool = False,
        memo: Hashable | None = None,
    ) -> tuple[list[Device], int, list[int]] | None:
        """Layer counts from `split` for these devices; devices that get none are dropped and the rest
        split again (each device in llama.cpp's list costs memory and changes the split), unless
        `keep_empty` (a GPU selector names exactly the devices). None when `split` finds no fit.

        With `memo` (what identifies `split`), the outcome is remembered per capacities: the workers of
        a large cluster are mostly alike, and alike workers settle alike."""
        capacities = tuple(free_vram(d) for d in devices)
        key = (memo, capacities, rpc, keep_empty) if memo is not None else None
        if key is not None and key in self._settled:
            known = self._settled[key]
        else:
            known = self._settle(capacities, rpc, split, keep_empty)
            if key is not None:
                self._settled[key] = known
        if known is None:
            return None
        kept, kept_rpc, counts = known
        return [devices[i] for i in kept], kept_rpc, list(counts)

    @staticmethod
    def _settle(
        capacities: tuple[int, ...], rpc: int, split: Split, keep_empty: bool
    ) -> tuple[tuple[int, ...], int, tuple[int, ...]] | None:
        positions = list(range(len(capacities)))
        for _ in range(len(capacities) + 1):
            counts = split([capacities[i] for i in positions], rpc)
            if counts is None:
                return None
            if keep_empty or all(counts):
                return tuple(positions), rpc, tuple(counts)
            kept = [i for i, count in enumerate(counts) if count]
            if not kept:
                return None
            rpc = sum(1 for i in kept if i < rpc)
            positions = [positions[i] for i in kept]
        return None

    def candidate(self, devices: list[Device], rpc: int, counts: list[int]) -> Candidate | None:
        """The placement with counts[i] layers on devices[i], hosted by the worker of the last device."""
        option = self.option(devices[-1][0], devices, rpc, counts)
        return self.build(option) if option is not None else None

    def candidate_on(
        self, host: WorkerSnapshot, devices: list[Device], rpc: int, counts: list[int]
    ) -> Candidate | None:
        option = self.option(host, devices, rpc, counts)
        return self.build(option) if option is not None else None

    def option(
        self, host: WorkerSnapshot, devices: list[Device], rpc: int, counts: list[int]
    ) -> Option | None:
        """The placement with counts[i] layers on devices[i], if the host has the RAM (and CPU threads
        for layers left on the CPU); records why not. Cheap: a Candidate is built only for the winner."""
        vram = self.plan.vram(counts, rpc)
        offloaded = sum(counts)
        host_vram = sum(v for (worker, _), v in zip(devices, vram, strict=True) if worker is host)
        ram = self.plan.ram(counts, rpc) + self.growth
        on_cpu = self.layers - offloaded
        if not host.fits_memory(ram, host_vram):
            self._ram_short(host, ram, host_vram, on_cpu, len(devices))
            return None
        threads = self.threads(host) if on_cpu else 0
        if threads and not self.has_threads(host, threads):
            return None
        workers = {host.id: host.instances} | {w.id: w.instances for w, _ in devices}
        left = sum(free_vram(d) - v for d, v in zip(devices, vram, strict=True))
        return Option(host, devices, rpc, counts, vram, ram, threads, sum(workers.values()), left, offloaded)

    def unified_option(
        self,
        host: WorkerSnapshot,
        devices: list[Device],
        rpc: int,
        split_for: Callable[[int], Split],
    ) -> Option | None:
        """A partial offload on a unified-memory host: the GPU's share and the RAM come from one pool, so
        when both together overflow it, the host's GPUs are given less and the split made again."""
        shrink = 0
        for _ in range(UNIFIED_RETRIES):
            settled = self.settle(devices, rpc, split_for(shrink))
            if settled is None:
                return None
            kept, kept_rpc, counts = settled
            vram = self.plan.vram(counts, kept_rpc)
            host_vram = sum(v for (worker, _), v in zip(kept, vram, strict=True) if worker is host)
            ram = self.plan.ram(counts, kept_rpc) + self.growth
            over = ram + host_vram - host.ram_free
            if over <= 0:
                return self.option(host, kept, kept_rpc, counts)
            shrink += over
        self._ram_short(host, ram, host_vram, self.layers - sum(counts), len(kept))
        return None

    def _ram_short(self, host: WorkerSnapshot, ram: int, host_vram: int, on_cpu: int, devices: int) -> None:
        if host.unified_memory:
            self.rejections.unified_memory_short(host, host_vram, ram)
        elif on_cpu:
            self.rejections.add(
                "worker {worker}: {free} RAM allocatable, needs {need} with {cpu} of {total} layers on the "
                "CPU and the rest on {devices} GPU(s)",
                worker=host.name,
                free=Bytes(host.ram_free),
                need=Bytes(ram),
                cpu=on_cpu,
                total=self.layers,
                devices=devices,
            )
        else:
            self.rejections.add(
                "worker {worker}: {free} RAM allocatable, needs {need} to host the model across {count} GPUs",
                worker=host.name,
                free=Bytes(host.ram_free),
                need=Bytes(ram),
                count=devices,
            )

    def build(self, option: Option) -> Candidate:
        host, devices, rpc, counts, vram = option.host, option.devices, option.rpc, option.counts, option.vram
        offloaded = option.gpu_layers
        parts: dict[int, tuple[WorkerSnapshot, list[int], dict[int, int], list[int]]] = {}
        for (worker, gpu), amount, count in zip(devices, vram, counts, strict=True):
            _, indexes, claimed, layers = parts.setdefault(worker.id, (worker, [], {}, []))
            indexes.append(gpu.index)
            claimed[gpu.index] = amount
            layers.append(count)
        _, indexes, claimed, layers = parts.pop(host.id, (host, [], {}, []))
        claim = ResourceClaim(
            ram=option.ram,
            vram=claimed,
            offload_layers=offloaded,
            total_layers=self.layers,
            cpu_threads=option.threads,
        )
        main = Assignment(host, indexes, claim, layers)
        subordinates = [
            Assignment(worker, idx, ResourceClaim(vram=amounts), lay)
            for worker, idx, amounts, lay in parts.values()
        ]
        layout = LayerLayout(
            gpu_layers=offloaded if offloaded < self.layers or len(devices) > 1 else None,
            tensor_split=list(counts) if len(devices) > 1 else [],
            rpc=[f"{w.ip}:{g.rpc_port}" for w, g in devices[:rpc]],
            threads=self.engine_threads(host) if option.threads else None,
        )
        full = offloaded == self.layers
        if rpc:
            mode = PlacementMode.RPC if full else PlacementMode.RPC_PARTIAL_OFFLOAD
        elif full:
            mode = PlacementMode.GPU if len(devices) == 1 else PlacementMode.MULTI_GPU
        else:
            mode = PlacementMode.PARTIAL_OFFLOAD
        return Candidate(mode, main, subordinates, layout, option.tightness, offloaded, self.layers)

    def cpu(self, worker: WorkerSnapshot) -> Candidate | None:
        """Every layer on the worker's CPU."""
        ram = self.plan.ram([]) + self.growth
        if not worker.fits_memory(ram, 0):
            self.rejections.add(
                "worker {worker}: {free} RAM allocatable, needs {need} to run on the CPU",
                worker=worker.name,
                free=Bytes(worker.ram_free),
                need=Bytes(ram),
            )
            return None
        threads = self.threads(worker)
        if not self.has_threads(worker, threads):
            return None
        claim = ResourceClaim(ram=ram, total_layers=self.layers, cpu_threads=threads)
        layout = LayerLayout(gpu_layers=0, threads=self.engine_threads(worker))
        main = Assignment(worker, [], claim)
        return Candidate(PlacementMode.CPU, main, [], layout, worker.ram_free - ram, 0, self.layers)
