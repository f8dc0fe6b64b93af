"""The tiers of a llama-box placement, each over a kind of GPU set: one GPU, several GPUs of one worker,
GPUs of several workers through llama.cpp RPC servers, as many layers as fit with the rest in RAM (or
exactly the user's -ngl), the CPU alone. fit/llama_box.py says in which order they are tried.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpustack.scheduler.candidates import Assignment, Best, Bytes, Candidate, Rejections, score_key
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.fit.layer_plan import MAX_DEVICES
from gpustack.scheduler.fit.llama_box_devices import Device, DeviceFit, Option, Pick, Split, free_vram
from gpustack.scheduler.request import LlamaBoxNeed, PlacementRequest
from gpustack.schemas.models import PlacementStrategy, ResourceClaim
from gpustack.schemas.placement import LayerLayout, PlacementMode

# How many workers are tried as the host of an RPC placement (the ones with the most room).
RPC_HOSTS_TRIED = 3
# How many RPC device sets a host tries for every layer on GPUs before giving up.
RPC_ATTEMPTS = 4


def ascending(worker: WorkerSnapshot, gpus: Sequence[GPUSnapshot]) -> list[Device]:
    """llama.cpp gives the output layer (the largest) to the last device: put the roomiest last."""
    return sorted(((worker, g) for g in gpus), key=free_vram)


def _roomiest(worker: WorkerSnapshot, gpus: Sequence[GPUSnapshot], count: int) -> list[GPUSnapshot]:
    return sorted(gpus, key=lambda g: -worker.vram_free.get(g.index, 0))[:count]


class Tiers:
    """The tiers for one placement of one requirement: each returns the best candidates it finds (only
    the winner of a tier over many workers is built) and records why each worker was passed over."""

    def __init__(self, request: PlacementRequest, need: LlamaBoxNeed, rejections: Rejections) -> None:
        self.request = request
        self.rejections = rejections
        self.devices = DeviceFit(need, rejections)
        self.plan = need.planner
        self.layers = need.estimate.total_layers
        self.growth = need.estimate.growth_bytes
        self.full_vram = self.plan.vram([self.layers])[0]  # every layer on one device
        # --split-mode none: llama.cpp runs every offloaded layer on its main GPU and no other
        self.max_devices = 1 if need.estimate.split_mode == "none" else MAX_DEVICES
        self.full_ram = self.plan.ram([self.layers]) + self.growth

    # ---- splits

    def split_all(self, capacities: Sequence[int], rpc: int) -> list[int] | None:
        return self.plan.balanced(capacities, rpc)

    def split_up_to(self, limit: int, exact: bool, shrink_local: int = 0) -> Split:
        """As many of the last `limit` layers as fit (exactly `limit` when `exact`); `shrink_local` less
        room on the last device (a unified-memory host's own GPU)."""

        def split(capacities: Sequence[int], rpc: int) -> list[int] | None:
            if shrink_local and capacities:
                capacities = [*capacities[:-1], max(capacities[-1] - shrink_local, 0)]
            counts = self.plan.most(capacities, rpc, limit)
            placed = sum(counts)
            return counts if placed and (placed == limit or not exact) else None

        return split

    # ---- tier 1: one GPU holds every layer

    def single_gpu(self, eligible: list[Eligible]) -> list[Candidate]:
        need_vram, need_ram = self.full_vram, self.full_ram
        best = Best(self.request.placement_strategy)
        binpack = self.request.placement_strategy == PlacementStrategy.BINPACK
        for entry in eligible:
            worker = entry.worker
            if not entry.gpus:
                continue
            vram_free = worker.vram_free
            # Reasons are shown only when nothing fits: once something does, stop recording them.
            explain = best.worker is None
            if worker.max_vram_free < need_vram:
                if explain:
                    self.rejections.gpus_short(worker, entry.gpus, need_vram)
                continue
            if not worker.fits_memory(need_ram, need_vram):
                if explain:
                    self.ram_short(worker, need_ram, need_vram)
                continue
            # Per worker only its best GPU can win: the tightest fit for binpack, the roomiest for spread.
            chosen, chosen_free = -1, 0
            for gpu in entry.gpus:
                free = vram_free.get(gpu.index, 0)
                if free >= need_vram and (
                    chosen < 0 or (free < chosen_free if binpack else free > chosen_free)
                ):
                    chosen, chosen_free = gpu.index, free
            if chosen >= 0:
                best.offer(worker, chosen, chosen_free - need_vram)
            elif explain:  # the roomiest GPU is one this request may not use
                self.rejections.gpus_short(worker, entry.gpus, need_vram)
        if best.worker is None:
            return []
        claim = ResourceClaim(
            ram=need_ram, vram={best.index: need_vram}, offload_layers=self.layers, total_layers=self.layers
        )
        assignment = Assignment(best.worker, [best.index], claim, [self.layers])
        layout = LayerLayout()
        return [
            Candidate(PlacementMode.GPU, assignment, [], layout, best.tightness, self.layers, self.layers)
        ]

    def ram_short(self, worker: WorkerSnapshot, ram: int, vram: int) -> None:
        if worker.unified_memory:
            self.rejections.unified_memory_short(worker, vram, ram)
        else:
            self.rejections.add(
                "worker {worker}: {free} RAM allocatable, needs {need} beside its GPUs",
                worker=worker.name,
                free=Bytes(worker.ram_free),
                need=Bytes(ram),
            )

    # ---- tier 2: several GPUs of one worker

    def multi_gpu(self, eligible: list[Eligible]) -> list[Candidate]:
        if self.max_devices == 1:
            self.rejections.add("several GPUs: --split-mode none runs every layer on one GPU")
            return []
        pick = Pick(self.request.placement_strategy)
        for entry in eligible:
            worker = entry.worker
            if len(entry.gpus) < 2:
                continue
            if sum(max(worker.vram_free.get(g.index, 0), 0) for g in entry.gpus) < self.full_vram:
                gpus, room = entry.gpus[:MAX_DEVICES], []  # together too small: no split to try
            else:
                gpus = _roomiest(worker, entry.gpus, MAX_DEVICES)
                room = [max(worker.vram_free.get(g.index, 0), 0) for g in gpus]
            for k in range(2, len(room) + 1):
                if sum(room[:k]) < self.full_vram:
                    continue  # these k GPUs together cannot hold the layers: no need to try the split
                settled = self.devices.settle(ascending(worker, gpus[:k]), 0, self.split_all, memo="all")
                if settled is not None:
                    pick.offer(self.devices.option(worker, *settled))
                    break
            else:
                self.rejections.add(
                    "worker {worker}: its {count} GPUs together have {free} allocatable, not enough for "
                    "{need} of layers plus a compute buffer on each",
                    worker=worker.name,
                    count=len(gpus),
                    free=Bytes(sum(max(worker.vram_free.get(g.index, 0), 0) for g in gpus)),
                    need=Bytes(self.full_vram),
                )
        return [self.devices.build(pick.best)] if pick.best is not None else []

    # ---- tier 3: GPUs of several workers, through llama.cpp RPC servers

    def _rpc_pool(self, eligible: list[Eligible]) -> list[Device]:
        """GPUs other workers can lend, roomiest first. A GPU of another worker is reachable only through
        its RPC server, which serves one instance at a time."""
        pool = [
            (entry.worker, gpu)
            for entry in eligible
            for gpu in entry.gpus
            if gpu.rpc_port
            and gpu.index not in entry.worker.rpc_lent
            and entry.worker.vram_free.get(gpu.index, 0) > 0
        ]
        pool.sort(key=lambda d: -free_vram(d))
        return pool

    def _hosts(self, eligible: list[Eligible]) -> list[Eligible]:
        return sorted(eligible, key=lambda e: -e.worker.ram_free)[:RPC_HOSTS_TRIED]

    def across_workers(self, eligible: list[Eligible]) -> list[Candidate]:
        if self.max_devices == 1:
            return []
        pool = self._rpc_pool(eligible)
        if len({worker.id for worker, _ in pool}) < 2:
            return []
        pick = Pick(self.request.placement_strategy)
        for entry in self._hosts(eligible):
            host = entry.worker
            local = ascending(host, _roomiest(host, entry.gpus, MAX_DEVICES - 1))
            have = sum(max(free_vram(d), 0) for d in local)
            remote: list[Device] = []
            attempts = 0
            # Add the roomiest remote GPUs until together they could hold the model, then try; a few more
            # GPUs are allowed for the compute buffer each device needs.
            for device in pool:
                if device[0].id == host.id:
                    continue
                if len(remote) + len(local) >= MAX_DEVICES:
                    break
                remote.append(device)
                have += free_vram(device)
                if have < self.full_vram:
                    continue
                settled = self.devices.settle([*remote, *local], len(remote), self.split_all)
                if settled is not None:
                    pick.offer(self.devices.option(host, *settled))
                    break
                attempts += 1
                if attempts >= RPC_ATTEMPTS:
                    break
        if pick.best is None:
            self.rejections.add(
                "across workers (llama.cpp RPC): the {count} roomiest GPUs together have {free} "
                "allocatable, not enough for {need} of layers plus a compute buffer on each",
                count=min(len(pool), MAX_DEVICES),
                free=Bytes(sum(free_vram(d) for d in pool[:MAX_DEVICES])),
                need=Bytes(self.full_vram),
            )
            return []
        return [self.devices.build(pick.best)]

    # ---- tier 4: as many layers as fit on GPUs (or exactly the user's -ngl), the rest in RAM

    def partial_offload(self, eligible: list[Eligible], limit: int, exact: bool) -> list[Candidate]:
        """Per worker, its GPUs with the most layers (exact: the fewest GPUs that hold `limit`); then,
        when distributed inference is allowed, GPUs of other workers through RPC as well."""
        pick = Pick(self.request.placement_strategy)
        rest = self._exact_on_one_gpu(eligible, limit, pick) if exact else eligible
        for entry in rest:
            if entry.gpus:
                pick.offer(self._partial_on_worker(entry, limit, exact))
        if (
            self.request.distributed_inference_across_workers
            and self.max_devices > 1
            and not (exact and pick.best)
        ):
            pool = self._rpc_pool(eligible)
            if pool:
                for entry in self._hosts(eligible):
                    pick.offer(self._partial_over_rpc(entry, pool, limit, exact))
        return [self.devices.build(pick.best)] if pick.best is not None else []

    def _exact_on_one_gpu(self, eligible: list[Eligible], layers: int, pick: Pick) -> list[Eligible]:
        """The user's -ngl on one GPU, where one holds them: the best such GPU for the strategy goes to
        `pick` (only it becomes an option: this runs over every worker). Returns the workers none of
        whose GPUs can hold them alone, to try with several."""
        vram = self.plan.vram([layers])[0]
        ram = self.plan.ram([layers]) + self.growth
        binpack = self.request.placement_strategy == PlacementStrategy.BINPACK
        rest = []
        best: tuple[tuple[int, int, int], WorkerSnapshot, GPUSnapshot] | None = None
        for entry in eligible:
            worker = entry.worker
            if not entry.gpus:
                continue
            if worker.max_vram_free < vram:
                rest.append(entry)
                continue
            chosen, chosen_free = None, 0
            for gpu in entry.gpus:
                free = worker.vram_free.get(gpu.index, 0)
                if free >= vram and (
                    chosen is None or (free < chosen_free if binpack else free > chosen_free)
                ):
                    chosen, chosen_free = gpu, free
            if chosen is None:
                rest.append(entry)
                continue
            key = score_key(self.request.placement_strategy, worker.instances, chosen_free - vram, layers)
            if best is not None and key >= best[0]:
                continue  # RAM and threads are checked only for a GPU that would win
            if not worker.fits_memory(ram, vram):
                self.ram_short(worker, ram, vram)
                continue
            if not self.devices.has_threads(worker, self.devices.threads(worker)):
                continue
            best = (key, worker, chosen)
        if best is not None:
            _, worker, gpu = best
            pick.offer(self.devices.option(worker, [(worker, gpu)], 0, [layers]))
        return rest

    def _partial_on_worker(self, entry: Eligible, limit: int, exact: bool) -> Option | None:
        worker = entry.worker
        if worker.max_vram_free < self.plan.layer_bytes(1):  # not even the output layer's weights
            self.nothing_fits(worker, entry.gpus[:MAX_DEVICES], limit, exact)
            return None
        gpus = _roomiest(worker, entry.gpus, self.max_devices)
        sizes = range(1, len(gpus) + 1) if exact else [len(gpus)]
        floor = self.plan.layer_bytes(limit) if exact else 0
        room = 0
        for k in sizes:
            room += max(worker.vram_free.get(gpus[k - 1].index, 0), 0) if exact else 0
            if room < floor:
                continue  # these GPUs cannot hold the layers' weights alone: no need to split
            devices = ascending(worker, gpus[:k])
            if worker.unified_memory:  # one GPU sharing the pool with RAM; unified_option says why not
                return self.devices.unified_option(
                    worker, devices, 0, lambda shrink: self.split_up_to(limit, exact, shrink)
                )
            settled = self.devices.settle(devices, 0, self.split_up_to(limit, exact), memo=(limit, exact))
            if settled is not None:
                return self.devices.option(worker, *settled)
        self.nothing_fits(worker, gpus, limit, exact)
        return None

    def nothing_fits(self, worker: WorkerSnapshot, gpus: list[GPUSnapshot], limit: int, exact: bool) -> None:
        free = Bytes(sum(max(worker.vram_free.get(g.index, 0), 0) for g in gpus))
        if exact:
            self.rejections.add(
                "worker {worker}: its {count} GPU(s) have {free} allocatable, not enough for the {layers} "
                "layers -ngl asks for",
                worker=worker.name,
                count=len(gpus),
                free=free,
                layers=limit,
            )
        else:
            self.rejections.add(
                "worker {worker}: not even one layer fits on its {count} GPU(s) ({free} allocatable)",
                worker=worker.name,
                count=len(gpus),
                free=free,
            )

    def _partial_over_rpc(
        self, entry: Eligible, pool: list[Device], limit: int, exact: bool
    ) -> Option | None:
        host = entry.worker
        local = ascending(host, _roomiest(host, entry.gpus, MAX_DEVICES - 1))
        remote = [d for d in pool if d[0].id != host.id][: MAX_DEVICES - len(local)]
        if not remote:
            return None
        remote.reverse()  # the roomiest last among the RPC servers too
        settled = self.devices.settle([*remote, *local], len(remote), self.split_up_to(limit, exact))
        if settled is None or settled[1] == 0:
            return None  # no layer on another worker: the same as the worker alone
        return self.devices.option(host, *settled)

    # ---- tier 5: the CPU alone

    def cpu(self, eligible: list[Eligible], allowed_on_gpu_workers: bool) -> list[Candidate]:
        found = []
        for entry in eligible:
            if entry.worker.gpus and not allowed_on_gpu_workers:
                continue
            candidate = self.devices.cpu(entry.worker)
            if candidate is not None:
                found.append(candidate)
        return found
