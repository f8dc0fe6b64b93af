"""Where vLLM or MindIE can run a model: one GPU, then tensor parallel over GPUs of one worker, then over
several workers (vLLM with Ray, MindIE multi-node). Each GPU used must qualify on its own: at least the
engine's share (--gpu-memory-utilization, default 90 %) of it allocatable, and that share big enough.

When the user sets the parallel sizes (-tp, -pp, -dp), the device count is theirs: exactly that many
GPUs, each checked at their tensor parallel size, or the reasons why not.
"""

from __future__ import annotations

from gpustack.scheduler.candidates import Assignment, Best, Candidate, Rejections, score_key
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.fit.engine_cpu import on_cpu
from gpustack.scheduler.request import FixedParallel, PlacementRequest, TensorParallelNeed
from gpustack.schemas.models import PlacementStrategy, ResourceClaim
from gpustack.schemas.placement import ParallelLayout, PlacementMode

Chosen = list[tuple[WorkerSnapshot, list[GPUSnapshot]]]


def valid_size(need: TensorParallelNeed, tp: int) -> bool:
    """Whether the engine accepts this tensor parallel size for the model: it divides the attention heads
    (vLLM and MindIE split them), vLLM also needs the KV heads to divide it or be divided by it, and
    MindIE takes powers of two only."""
    heads, kv = need.num_attention_heads, need.num_key_value_heads
    if heads and heads % tp:
        return False
    if kv and kv % tp and tp % kv:
        return False
    return not (need.power_of_two and tp & (tp - 1))


def _sizes(need: TensorParallelNeed, most: int) -> list[int]:
    """Tensor-parallel sizes the engine accepts for this model, smallest first (1 excluded)."""
    return [n for n in range(2, most + 1) if valid_size(need, n)]


class _Fit:
    def __init__(self, need: TensorParallelNeed, rejections: Rejections) -> None:
        self.need = need
        self.rejections = rejections
        self._verdicts: dict[tuple[int, int, int], str | None] = {}

    def check(self, worker: WorkerSnapshot, gpu: GPUSnapshot, tp: int) -> str | None:
        free = worker.vram_free.get(gpu.index, 0)
        key = (gpu.total, free, tp)
        if key not in self._verdicts:
            self._verdicts[key] = self.need.check(gpu.total, free, tp)
        return self._verdicts[key]

    def claim(self, gpus: list[GPUSnapshot]) -> ResourceClaim:
        return ResourceClaim(
            ram=self.need.ram, vram={gpu.index: int(gpu.total * self.need.utilization) for gpu in gpus}
        )

    def qualifying(
        self, worker: WorkerSnapshot, gpus: list[GPUSnapshot], tp: int, record: bool
    ) -> list[GPUSnapshot]:
        good = []
        for gpu in gpus:
            reason = self.check(worker, gpu, tp)
            if reason is None:
                good.append(gpu)
            elif record:
                self.rejections.add(
                    "worker {worker}, GPU {gpu.index} ({gpu.name}){at}: {reason}",
                    worker=worker.name,
                    gpu=gpu,
                    at=f" at tensor parallel {tp}" if tp > 1 else "",
                    reason=reason,
                )
        return good

    def single(self, eligible: list[Eligible], strategy: PlacementStrategy) -> list[Candidate]:
        best = Best(strategy)
        binpack = strategy == PlacementStrategy.BINPACK
        utilization = self.need.utilization
        for entry in eligible:
            worker = entry.worker
            # Reasons are shown only if nothing fits, and only the second pass records them.
            explain = best.worker is None and self.rejections.recording
            chosen, chosen_left = -1, 0
            for gpu in entry.gpus:
                left = worker.vram_free[gpu.index] - int(gpu.total * utilization)
                # Below the engine's share the GPU cannot qualify: skip the estimate's check then.
                if (left < 0 and not explain) or self.check(worker, gpu, 1) is not None:
                    if explain:
                        self.qualifying(worker, [gpu], 1, record=True)
                    continue
                if chosen < 0 or (left < chosen_left if binpack else left > chosen_left):
                    chosen, chosen_left = gpu.index, left
            if chosen >= 0:
                best.offer(worker, chosen, chosen_left)  # per worker only its best GPU can win
        if best.worker is None:
            return []
        winner = best.worker.gpu(best.index)
        assert winner is not None
        assignment = Assignment(best.worker, [best.index], self.claim([winner]))
        layout = ParallelLayout(max_model_len=self.need.max_model_len)
        return [Candidate(PlacementMode.GPU, assignment, layout=layout, tightness=best.tightness)]

    def one_worker(
        self,
        eligible: list[Eligible],
        strategy: PlacementStrategy,
        sizes: list[int] | None = None,
        tp: int | None = None,
    ) -> list[Candidate]:
        """The best worker that can give `count` of its GPUs, for the first count in `sizes` it can give
        (default: the valid tensor parallel sizes up to its GPU count); each GPU checked at `tp`
        (default: count). Only the winner becomes a Candidate."""
        best: tuple[tuple[int, int, int], WorkerSnapshot, list[GPUSnapshot], int, int] | None = None
        utilization = self.need.utilization
        for entry in eligible:
            worker = entry.worker
            counts = sizes if sizes is not None else _sizes(self.need, len(entry.gpus))
            counts = [c for c in counts if c <= len(entry.gpus)]
            explain = best is None and self.rejections.recording
            # Below the engine's share a GPU cannot qualify: skip the estimate's check for it then.
            room = [g for g in entry.gpus if worker.vram_free[g.index] >= int(g.total * utilization)]
            room.sort(key=lambda g: -worker.vram_free[g.index])
            for count in counts:
                if len(room) < count and not explain:
                    continue
                at = tp or count
                if explain:
                    good = self.qualifying(worker, entry.gpus, at, record=count == counts[-1])
                    good.sort(key=lambda g: -worker.vram_free[g.index])
                else:  # the roomiest that qualify, up to `count`
                    good = []
                    for gpu in room:
                        if self.check(worker, gpu, at) is None:
                            good.append(gpu)
                            if len(good) == count:
                                break
                if len(good) >= count:
                    chosen = good[:count]
                    left = sum(worker.vram_free[g.index] for g in chosen)
                    key = score_key(strategy, worker.instances, left)
                    if best is None or key < best[0]:
                        best = (key, worker, chosen, count, left)
                    break
        if best is None:
            return []
        _, worker, chosen, count, left = best
        layout = ParallelLayout(
            tensor_parallel_size=None if self.need.fixed else count, max_model_len=self.need.max_model_len
        )
        assignment = Assignment(worker, [g.index for g in chosen], self.claim(chosen))
        return [Candidate(PlacementMode.TENSOR_PARALLEL, assignment, [], layout, left)]

    def across_workers(
        self, eligible: list[Eligible], sizes: list[int], tp: int | None = None
    ) -> list[Candidate]:
        """GPUs of several workers for the first count in `sizes` they can give together (MindIE: the
        same number on each worker)."""
        for count in sizes:
            at = tp or count
            good = [(e.worker, self.qualifying(e.worker, e.gpus, at, record=False)) for e in eligible]
            good = sorted([(w, g) for w, g in good if g], key=lambda item: -len(item[1]))
            chosen = self._equal(good, count) if self.need.equal_per_worker else self._fewest(good, count)
            if chosen is None:
                continue
            ray_port = None
            if self.need.ray:  # the main worker starts the Ray head: one that offers a free port
                heads = [i for i, (worker, _) in enumerate(chosen) if worker.free_ray_head_port() is not None]
                if not heads:
                    self.rejections.add(
                        "across workers: none of {workers} has a free Ray port for the head (each Ray node "
                        "takes a slot of its worker's --ray-port-range; widen it on one of them)",
                        workers=", ".join(worker.name for worker, _ in chosen),
                    )
                    return []
                chosen.insert(0, chosen.pop(heads[0]))
                ray_port = chosen[0][0].free_ray_head_port()
            (host, host_gpus), *others = chosen
            main = Assignment(host, [g.index for g in host_gpus], self.claim(host_gpus))
            subordinates = [Assignment(w, [g.index for g in gs], self.claim(gs)) for w, gs in others]
            layout = ParallelLayout(
                workers=len(chosen),
                tensor_parallel_size=None if self.need.fixed else count,
                devices_per_worker=len(host_gpus) if self.need.equal_per_worker else None,
                max_model_len=self.need.max_model_len,
                ray_head_port=ray_port,
            )
            return [Candidate(PlacementMode.MULTI_WORKER, main, subordinates, layout)]
        return []

    @staticmethod
    def _fewest(good: Chosen, count: int) -> Chosen | None:
        """The workers with the most qualifying GPUs first, until `count` GPUs are chosen (two or more)."""
        if sum(len(g) for _, g in good) < count:
            return None
        chosen: Chosen = []
        left = count
        for worker, gpus in good:
            take = gpus[: min(len(gpus), left)]
            chosen.append((worker, take))
            left -= len(take)
            if left == 0:
                break
        return chosen if len(chosen) >= 2 else None  # one worker alone is the previous tier

    def _equal(self, good: Chosen, count: int) -> Chosen | None:
        """MindIE multi-node: the fewest workers (two or more) that each give count / workers NPUs."""
        for workers in range(2, len(good) + 1):
            if count % workers:
                continue
            each = count // workers
            if self.need.power_of_two and each & (each - 1):
                continue
            able = [(w, gpus[:each]) for w, gpus in good if len(gpus) >= each]
            if len(able) >= workers:
                return able[:workers]
        return None


def candidates(
    request: PlacementRequest, eligible: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    need = request.need
    assert isinstance(need, TensorParallelNeed)
    fit = _Fit(need, rejections)
    without = [entry for entry in eligible if not entry.gpus]
    if need.cpu is None and not request.gpu_ids:
        for entry in without:
            rejections.add(
                "worker {worker}: {backend} needs a GPU, this worker has none",
                worker=entry.worker.name,
                backend=request.backend,
            )
    eligible = [entry for entry in eligible if entry.gpus]
    found = _on_gpus(fit, request, eligible) if eligible or request.gpu_ids else []
    if found or need.cpu is None or request.gpu_ids:
        return found
    return on_cpu(request, need.cpu, without, rejections)  # vLLM's CPU build, on workers without GPUs


def _on_gpus(fit: _Fit, request: PlacementRequest, eligible: list[Eligible]) -> list[Candidate]:
    need, rejections = fit.need, fit.rejections
    if need.fixed is not None:
        return _fixed(fit, request, eligible, need.fixed)
    if request.gpu_ids:
        return _selected(fit, request, eligible)
    if found := fit.single(eligible, request.placement_strategy):
        return found
    if found := fit.one_worker(eligible, request.placement_strategy):
        return found
    if need.multi_worker:
        total = sum(len(entry.gpus) for entry in eligible)
        sizes = _sizes(need, total)
        if found := fit.across_workers(eligible, sizes):
            return found
        rejections.add(
            "across workers: not {sizes} GPUs that each qualify{equal} (tensor parallel sizes must divide "
            "the {heads} attention heads{kind})",
            sizes="/".join(str(s) for s in sizes) or "enough",
            equal=", the same number on each worker" if need.equal_per_worker else "",
            heads=need.num_attention_heads,
            kind=" and be powers of 2" if need.power_of_two else "",
        )
        return []
    if len(eligible) > 1 and need.multi_worker_off_hint:
        rejections.add("across workers: {hint}", hint=need.multi_worker_off_hint)
    return []


def _selected(fit: _Fit, request: PlacementRequest, eligible: list[Eligible]) -> list[Candidate]:
    """Exactly the selected GPUs (the filters checked each exists and may be used)."""
    need = fit.need
    count = sum(len(entry.gpus) for entry in eligible)
    if count > 1 and not valid_size(need, count):
        fit.rejections.add(
            "the GPU selector names {count} GPUs, a tensor parallel size {backend} cannot use for this "
            "model ({heads} attention heads{kind})",
            count=count,
            backend=request.backend,
            heads=need.num_attention_heads,
            kind="; powers of 2 only" if need.power_of_two else "",
        )
        return []
    if len(eligible) == 1 and count == 1:
        return fit.single(eligible, request.placement_strategy)
    if len(eligible) == 1:
        return fit.one_worker(eligible, request.placement_strategy, [count])
    if not need.multi_worker:
        fit.rejections.add(
            "the selected GPUs are on several workers; {hint}", hint=need.multi_worker_off_hint
        )
        return []
    found = fit.across_workers(eligible, [count])
    if not found and need.equal_per_worker:
        fit.rejections.add("MindIE needs the same number of selected NPUs on every worker")
    return found


def _fixed(
    fit: _Fit, request: PlacementRequest, eligible: list[Eligible], fixed: FixedParallel
) -> list[Candidate]:
    """The user's -tp/-pp/-dp fix the device count: exactly that many GPUs, each checked at their tp."""
    need = fit.need
    devices, tp = fixed.devices, fixed.tensor_parallel
    if tp > 1 and not valid_size(need, tp):
        fit.rejections.add(
            "--tensor-parallel-size {tp} does not suit the model: it must divide its {heads} attention heads"
            "{kv}{kind}, or {backend} refuses to start",
            tp=tp,
            heads=need.num_attention_heads,
            kv=f" (and its {need.num_key_value_heads} KV heads, or be a multiple of them)"
            if need.num_key_value_heads
            else "",
            kind=" and be a power of 2" if need.power_of_two else "",
            backend=request.backend,
        )
        return []
    selected = sum(len(entry.gpus) for entry in eligible)
    if request.gpu_ids and selected != devices:
        fit.rejections.add(
            "the GPU selector names {selected} GPUs, but {flags} needs {devices}",
            selected=selected,
            flags=fixed.flags,
            devices=devices,
        )
        return []
    if devices == 1:
        return fit.single(eligible, request.placement_strategy)
    if found := fit.one_worker(eligible, request.placement_strategy, [devices], tp):
        return found
    if need.multi_worker:
        if found := fit.across_workers(eligible, [devices], tp):
            return found
        fit.rejections.add(
            "across workers: not {devices} GPUs that each qualify at tensor parallel {tp}{equal} ({flags})",
            devices=devices,
            tp=tp,
            equal=", the same number on each worker" if need.equal_per_worker else "",
            flags=fixed.flags,
        )
    elif len(eligible) > 1 and need.multi_worker_off_hint:
        fit.rejections.add("across workers: {hint}", hint=need.multi_worker_off_hint)
    for entry in eligible:
        if len(entry.gpus) < devices:
            fit.rejections.add(
                "worker {worker}: {have} GPU(s), {flags} needs {devices} on one worker",
                worker=entry.worker.name,
                have=len(entry.gpus),
                flags=fixed.flags,
                devices=devices,
            )
    return []
