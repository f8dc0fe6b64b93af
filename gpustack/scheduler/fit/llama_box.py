"""Where llama-box (llama.cpp) can run a GGUF model, in order of preference.

One GPU with every layer, then several GPUs of one worker, then GPUs of several workers through llama.cpp
RPC servers, then one GPU with part of the layers and the rest in RAM, then the CPU alone. The first tier
with any candidate wins; scoring picks among its candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

from gpustack.estimate.llama_box import LlamaBoxEstimate
from gpustack.estimate.llama_box_split import tensor_split_for
from gpustack.scheduler.candidates import (
    CPU_SHORT,
    Assignment,
    Best,
    Bytes,
    Candidate,
    Rejections,
)
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.request import PlacementRequest
from gpustack.schemas.models import PlacementStrategy, ResourceClaim

# How many workers are tried as the host of an RPC placement (the ones with the most room).
RPC_HOSTS_TRIED = 3


def distribute(
    estimate: LlamaBoxEstimate, capacities: Sequence[int], rpc_devices: int = 0
) -> list[int] | None:
    """Layer counts for devices of these capacities (in llama.cpp's order) so that every layer is on a
    device and each device's share fits; None when they cannot hold the model together."""
    layers = estimate.total_layers
    total = sum(max(c, 0) for c in capacities)
    if total <= 0:
        return None
    # Each device also needs a compute buffer whatever its share: split what is left after it.
    per_layer = max(1, (sum(estimate.layer_weights_bytes) + sum(estimate.layer_kv_bytes)) // max(layers, 1))
    fixed = max(0, estimate.split([layers]).vram[0] - per_layer * layers)
    room = [max(c - fixed, 0) for c in capacities]
    if sum(room) < per_layer * layers:
        return None  # after each device's compute buffer, not enough left for the layers
    spare = sum(room) or 1
    counts = [int(layers * r / spare) for r in room]
    for i in sorted(range(len(counts)), key=lambda i: -room[i])[: layers - sum(counts)]:
        counts[i] += 1
    # Then move layers off devices that overflow, as many at once as the overflow is worth.
    for attempt in range(2 * layers + len(capacities)):
        vram = estimate.split(counts, rpc_devices=rpc_devices).vram
        if attempt == 0 and sum(vram) > total:
            return None  # together too small: moving layers around cannot help
        over = [i for i, need in enumerate(vram) if need > capacities[i]]
        if not over:
            return counts
        source = over[0]
        slack = [capacities[j] - vram[j] if j != source else -1 for j in range(len(counts))]
        target = max(range(len(counts)), key=lambda j: slack[j])
        if counts[source] == 0 or slack[target] < per_layer:
            return None  # no device has room for another layer
        step = max(
            1,
            min(counts[source], (vram[source] - capacities[source]) // per_layer, slack[target] // per_layer),
        )
        counts[source] -= step
        counts[target] += step
    return None


class _Fit:
    def __init__(self, request: PlacementRequest, estimate: LlamaBoxEstimate, rejections: Rejections) -> None:
        self.request = request
        self.estimate = estimate
        self.rejections = rejections
        self.layers = estimate.total_layers
        self.growth = estimate.growth_bytes
        self.full = estimate.split([self.layers])  # every layer on one device
        self._distributions: dict[tuple[tuple[int, ...], int], list[int] | None] = {}

    def _claim(self, ram: int, vram: dict[int, int], layers: int) -> ResourceClaim:
        return ResourceClaim(
            ram=ram + self.growth, vram=vram, offload_layers=layers, total_layers=self.layers
        )

    # ---- tier 1: one GPU holds every layer

    def single_gpu(self, eligible: list[Eligible]) -> list[Candidate]:
        need_vram, need_ram = self.full.vram[0], self.full.ram + self.growth
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
            if worker.ram_free < need_ram:
                if not explain:
                    continue
                self.rejections.add(
                    "worker {worker}: {free} RAM allocatable, needs {need} beside its GPUs",
                    worker=worker.name,
                    free=Bytes(worker.ram_free),
                    need=Bytes(need_ram),
                )
                continue
            # Per worker only its best GPU can win: the tightest fit for binpack, the roomiest for spread.
            chosen, chosen_free = -1, 0
            for gpu in entry.gpus:
                free = vram_free.get(gpu.index, 0)
                if free >= need_vram and (
                    chosen < 0 or (free < chosen_free if binpack else free > chosen_free)
                ):
                    chosen, chosen_free = gpu.index, free
            best.offer(worker, chosen, chosen_free - need_vram)  # a GPU fits (max_vram_free says so)
        if best.worker is None:
            return []
        if best.index < 0:
            usable = {gpu.index for entry in eligible if entry.worker is best.worker for gpu in entry.gpus}
            best.index = max(usable, key=lambda i: best.worker.vram_free.get(i, 0))  # type: ignore[union-attr]
        claim = self._claim(self.full.ram, {best.index: need_vram}, self.layers)
        return [Candidate("gpu", Assignment(best.worker, [best.index], claim), tightness=best.tightness)]

    # ---- tier 2: several GPUs of one worker

    def multi_gpu(self, eligible: list[Eligible], exact: bool = False) -> list[Candidate]:
        found = []
        for entry in eligible:
            worker = entry.worker
            gpus = sorted(entry.gpus, key=lambda g: -worker.vram_free.get(g.index, 0))
            if len(gpus) < 2:
                continue
            sizes = range(len(gpus), len(gpus) + 1) if exact else range(2, len(gpus) + 1)
            room = [max(worker.vram_free.get(g.index, 0), 0) for g in gpus]
            for k in sizes:
                if sum(room[:k]) < self.full.vram[0]:
                    continue  # these k GPUs together cannot hold the layers: no need to try the split
                candidate = self._on_devices(worker, [], gpus[:k])
                if candidate is not None:
                    found.append(candidate)
                    break
            else:
                self.rejections.add(
                    "worker {worker}: its {count} GPUs together have {free} allocatable, not enough for "
                    "{need} of layers plus a compute buffer on each",
                    worker=worker.name,
                    count=len(gpus),
                    free=Bytes(sum(max(worker.vram_free.get(g.index, 0), 0) for g in gpus)),
                    need=Bytes(self.full.vram[0]),
                )
        return found

    def _on_devices(
        self, host: WorkerSnapshot, remote: list[tuple[WorkerSnapshot, GPUSnapshot]], local: list[GPUSnapshot]
    ) -> Candidate | None:
        """Every layer over RPC devices (first, in llama.cpp's order) and the host's own GPUs."""
        devices: list[tuple[WorkerSnapshot, GPUSnapshot]] = [*remote, *((host, gpu) for gpu in local)]
        capacities = [worker.vram_free.get(gpu.index, 0) for worker, gpu in devices]
        key = (tuple(capacities), len(remote))
        if key not in self._distributions:  # alike workers give alike capacities: decide each once
            self._distributions[key] = distribute(self.estimate, capacities, rpc_devices=len(remote))
        counts = self._distributions[key]
        if counts is None:
            return None
        # With RPC devices the host briefly holds a copy of each weight it sends while loading.
        split = self.estimate.split(counts, rpc_devices=len(remote))
        if host.ram_free < split.ram + self.growth:
            self.rejections.add(
                "worker {worker}: {free} RAM allocatable, needs {need} to host the model across {count} GPUs",
                worker=host.name,
                free=Bytes(host.ram_free),
                need=Bytes(split.ram + self.growth),
                count=len(devices),
            )
            return None
        per_worker: dict[int, dict[int, int]] = {}
        for (worker, gpu), amount, count in zip(devices, split.vram, counts, strict=True):
            if count or amount:
                per_worker.setdefault(worker.id, {})[gpu.index] = amount
        main = Assignment(
            host,
            list(per_worker.get(host.id, {})),
            self._claim(split.ram, per_worker.get(host.id, {}), self.layers),
        )
        subordinates = [
            Assignment(worker, list(per_worker[worker.id]), ResourceClaim(vram=per_worker[worker.id]))
            for worker in {w.id: w for w, _ in remote}.values()
            if worker.id in per_worker
        ]
        engine = {"gpu_layers": str(self.layers), "tensor_split": tensor_split_for(counts)}
        if remote:
            engine["rpc"] = ",".join(f"{w.ip}:{g.rpc_port}" for w, g in remote)
        left = sum(c - v for c, v in zip(capacities, split.vram, strict=True))
        return Candidate("rpc" if remote else "multi-gpu", main, subordinates, engine, tightness=left)

    # ---- tier 3: GPUs of several workers, through llama.cpp RPC servers

    def across_workers(self, eligible: list[Eligible]) -> list[Candidate]:
        # A GPU of another worker is reachable only through its RPC server, which serves one instance.
        pool = [
            (entry.worker, gpu)
            for entry in eligible
            for gpu in entry.gpus
            if gpu.rpc_port and gpu.index not in entry.worker.rpc_lent
        ]
        pool = [(w, g) for w, g in pool if w.vram_free.get(g.index, 0) > 0]
        if len({worker.id for worker, _ in pool}) < 2:
            return []
        pool.sort(key=lambda d: -d[0].vram_free.get(d[1].index, 0))
        hosts = sorted(eligible, key=lambda e: -e.worker.ram_free)[:RPC_HOSTS_TRIED]
        found = []
        for entry in hosts:
            host = entry.worker
            local = sorted(entry.gpus, key=lambda g: -host.vram_free.get(g.index, 0))
            have = sum(max(host.vram_free.get(g.index, 0), 0) for g in local)
            remote: list[tuple[WorkerSnapshot, GPUSnapshot]] = []
            attempts = 0
            # Add the roomiest remote GPUs until together they could hold the model, then try; a few more
            # GPUs are allowed for the compute buffer each device needs.
            for worker, gpu in pool:
                if worker.id == host.id:
                    continue
                remote.append((worker, gpu))
                have += worker.vram_free.get(gpu.index, 0)
                if have < self.full.vram[0]:
                    continue
                candidate = self._on_devices(host, remote, local)
                if candidate is not None:
                    found.append(candidate)
                    break
                attempts += 1
                if attempts >= 4:
                    break
        if not found:
            self.rejections.add(
                "across workers (llama.cpp RPC): all eligible GPUs together have {free} allocatable, "
                "not enough for {need} of layers plus a compute buffer on each",
                free=Bytes(sum(w.vram_free.get(g.index, 0) for w, g in pool)),
                need=Bytes(self.full.vram[0]),
            )
        return found

    # ---- tier 4: one GPU with as many layers as fit, the rest in RAM

    def partial_offload(self, eligible: list[Eligible]) -> list[Candidate]:
        rows = self.estimate.table()
        found = []
        for entry in eligible:
            worker = entry.worker
            if not entry.gpus:
                continue
            gpu = max(entry.gpus, key=lambda g: worker.vram_free.get(g.index, 0))
            free = worker.vram_free.get(gpu.index, 0)
            best = None
            for row in rows[1 : self.layers]:
                if row.vram <= free and row.ram + self.growth <= worker.ram_free:
                    best = row
            if best is None:
                self.rejections.add(
                    "worker {worker}: not even one layer fits on GPU {gpu.index} ({gpu.name}, {free} "
                    "allocatable) with the rest in {ram} of RAM",
                    worker=worker.name,
                    gpu=gpu,
                    free=Bytes(free),
                    ram=Bytes(worker.ram_free),
                )
                continue
            claim = self._claim(best.ram, {gpu.index: best.vram}, best.layers)
            engine = {"gpu_layers": str(best.layers)}
            found.append(
                Candidate(
                    "partial-offload",
                    Assignment(worker, [gpu.index], claim),
                    [],
                    engine,
                    self.layers - best.layers,
                )
            )
        return found

    # ---- tier 5: the CPU alone

    def cpu(self, eligible: list[Eligible], allowed_on_gpu_workers: bool) -> list[Candidate]:
        need = self.estimate.cpu_only.ram + self.growth
        found = []
        for entry in eligible:
            worker = entry.worker
            if worker.gpus and not allowed_on_gpu_workers:
                continue
            if worker.ram_free < need:
                self.rejections.add(
                    CPU_SHORT, worker=worker.name, free=Bytes(worker.ram_free), need=Bytes(need)
                )
                continue
            claim = self._claim(self.estimate.cpu_only.ram, {}, 0)
            found.append(
                Candidate(
                    "cpu", Assignment(worker, [], claim), [], {"gpu_layers": "0"}, worker.ram_free - need
                )
            )
        return found


def candidates(
    request: PlacementRequest, eligible: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    from gpustack.scheduler.request import LlamaBoxNeed

    assert isinstance(request.need, LlamaBoxNeed)
    fit = _Fit(request, request.need.estimate, rejections)
    if request.gpu_ids:
        return _selected(fit, request, eligible)
    if found := fit.single_gpu(eligible):
        return found
    if found := fit.multi_gpu(eligible):
        return found
    if request.distributed_inference_across_workers:
        if found := fit.across_workers(eligible):
            return found
    elif sum(len(entry.gpus) for entry in eligible) > 1:
        rejections.add("across workers: distributed inference across workers is off for this model")
    if request.cpu_offloading:
        if found := fit.partial_offload(eligible):
            return found
    elif any(entry.gpus for entry in eligible):
        rejections.add("CPU offloading is off for this model, so every layer must be on GPUs")
    return fit.cpu(eligible, allowed_on_gpu_workers=request.cpu_offloading)


def _selected(fit: _Fit, request: PlacementRequest, eligible: list[Eligible]) -> list[Candidate]:
    """With a GPU selector: exactly the selected GPUs, on one worker or across workers."""
    holders = [entry for entry in eligible if entry.gpus]
    if len(holders) != 1:
        if len(holders) > 1 and request.distributed_inference_across_workers:
            host = max(holders, key=lambda e: e.worker.ram_free)
            remote = [(e.worker, g) for e in holders if e is not host for g in e.gpus]
            unreachable = [g.id for _, g in remote if not g.rpc_port]
            if unreachable:
                fit.rejections.add(
                    "selected GPUs {gpus}: no RPC server lends them to other workers "
                    "(is their worker running with --disable-rpc-servers?)",
                    gpus=", ".join(unreachable),
                )
                return []
            candidate = fit._on_devices(host.worker, remote, host.gpus)
            if candidate is None:
                fit.rejections.add("the selected GPUs together cannot hold the model")
            return [candidate] if candidate else []
        if len(holders) > 1:
            fit.rejections.add("the selected GPUs are on several workers, and distributed inference is off")
        return []
    entry = holders[0]
    if len(entry.gpus) == 1:
        found = fit.single_gpu([entry])
        if not found and request.cpu_offloading:
            found = fit.partial_offload([entry])
        return found
    return fit.multi_gpu([entry], exact=True)
