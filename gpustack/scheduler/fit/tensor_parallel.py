"""Where vLLM or MindIE can run a model: one GPU, then tensor parallel over GPUs of one worker, then over
several workers (vLLM with Ray, MindIE multi-node). Each GPU used must qualify on its own: at least the
engine's share (--gpu-memory-utilization, default 90 %) of it allocatable, and that share big enough."""

from __future__ import annotations

from gpustack.scheduler.candidates import Assignment, Best, Candidate, Rejections
from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.request import PlacementRequest, TensorParallelNeed
from gpustack.schemas.models import PlacementStrategy, ResourceClaim


def _sizes(heads: int, most: int) -> list[int]:
    """Tensor-parallel sizes that divide the attention heads, smallest first (1 excluded)."""
    return [n for n in range(2, most + 1) if heads % n == 0] if heads else list(range(2, most + 1))


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
            explain = best.worker is None  # reasons are shown only if nothing fits
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
        return [Candidate("gpu", assignment, tightness=best.tightness)]

    def one_worker(self, eligible: list[Eligible], exact: bool = False) -> list[Candidate]:
        found = []
        for entry in eligible:
            sizes = [len(entry.gpus)] if exact else _sizes(self.need.num_attention_heads, len(entry.gpus))
            for tp in sizes:
                good = self.qualifying(entry.worker, entry.gpus, tp, record=tp == sizes[-1])
                if len(good) >= tp:
                    chosen = sorted(good, key=lambda g: -entry.worker.vram_free[g.index])[:tp]
                    engine = {"tensor_parallel_size": str(tp)}
                    left = sum(entry.worker.vram_free[g.index] for g in chosen)
                    assignment = Assignment(entry.worker, [g.index for g in chosen], self.claim(chosen))
                    found.append(Candidate("tensor-parallel", assignment, [], engine, left))
                    break
        return found

    def across_workers(self, eligible: list[Eligible], exact: bool = False) -> list[Candidate]:
        total = sum(len(entry.gpus) for entry in eligible)
        sizes = [total] if exact else _sizes(self.need.num_attention_heads, total)
        for tp in sizes:
            good = [(e.worker, self.qualifying(e.worker, e.gpus, tp, record=False)) for e in eligible]
            good = sorted([(w, g) for w, g in good if g], key=lambda item: -len(item[1]))
            if sum(len(g) for _, g in good) < tp:
                continue
            chosen: list[tuple[WorkerSnapshot, list[GPUSnapshot]]] = []
            left = tp
            for worker, gpus in good:
                take = gpus[: min(len(gpus), left)]
                chosen.append((worker, take))
                left -= len(take)
                if left == 0:
                    break
            if len(chosen) < 2:
                continue  # one worker alone is the previous tier
            (host, host_gpus), *others = chosen
            main = Assignment(host, [g.index for g in host_gpus], self.claim(host_gpus))
            subordinates = [Assignment(w, [g.index for g in gs], self.claim(gs)) for w, gs in others]
            engine = {"tensor_parallel_size": str(tp), "workers": str(len(chosen))}
            return [Candidate("multi-worker", main, subordinates, engine)]
        self.rejections.add(
            "across workers: not {sizes} GPUs that each qualify "
            "(tensor parallel sizes must divide the {heads} attention heads)",
            sizes="/".join(str(s) for s in sizes) or "enough",
            heads=self.need.num_attention_heads,
        )
        return []


def candidates(
    request: PlacementRequest, eligible: list[Eligible], rejections: Rejections
) -> list[Candidate]:
    need = request.need
    assert isinstance(need, TensorParallelNeed)
    fit = _Fit(need, rejections)
    for entry in eligible:
        if not entry.gpus and not request.gpu_ids:
            rejections.add(
                "worker {worker}: {backend} needs a GPU, this worker has none",
                worker=entry.worker.name,
                backend=request.backend,
            )
    eligible = [entry for entry in eligible if entry.gpus]
    if request.gpu_ids:
        holders = [entry for entry in eligible if entry.gpus]
        if len(holders) == 1 and len(holders[0].gpus) == 1:
            return fit.single(holders, request.placement_strategy)
        if len(holders) == 1:
            return fit.one_worker(holders, exact=True)
        if len(holders) > 1 and need.multi_worker:
            return fit.across_workers(holders, exact=True)
        if len(holders) > 1:
            rejections.add(
                "the selected GPUs are on several workers; {hint}", hint=need.multi_worker_off_hint
            )
        return []
    if found := fit.single(eligible, request.placement_strategy):
        return found
    if found := fit.one_worker(eligible):
        return found
    if need.multi_worker:
        return fit.across_workers(eligible)
    if len(eligible) > 1 and need.multi_worker_off_hint:
        rejections.add("across workers: {hint}", hint=need.multi_worker_off_hint)
    return []
