"""llama-box placements the user pinned: a GPU selector (exactly these GPUs), --tensor-split (these
proportions, so these layer counts per device) and --split-mode none (one GPU)."""

from __future__ import annotations

from gpustack.estimate.llama_box_split import layers_from_tensor_split
from gpustack.scheduler.candidates import Bytes, Candidate
from gpustack.scheduler.filters import Eligible
from gpustack.scheduler.fit.layer_plan import MAX_DEVICES
from gpustack.scheduler.fit.llama_box_devices import Device, Pick, free_vram
from gpustack.scheduler.fit.llama_box_tiers import Tiers, ascending
from gpustack.scheduler.request import PlacementRequest

NGL_WITHOUT_OFFLOADING = (
    "-ngl {asked} keeps {cpu} of the {total} layers on the CPU, but CPU offloading is off for this model: "
    "allow it, or remove -ngl"
)


def selected(
    fit: Tiers, request: PlacementRequest, eligible: list[Eligible], asked: int | None
) -> list[Candidate]:
    """With a GPU selector: exactly the selected GPUs (the filters checked that each exists and may be
    used), every layer on them, else as many as fit with the rest in RAM when CPU offloading allows."""
    if asked == 0:
        fit.rejections.add(
            "-ngl 0 runs every layer on the CPU, but a GPU selector names GPUs: remove one of the two"
        )
        return []
    holders = [entry for entry in eligible if entry.gpus]
    if not holders:
        return []
    if len(holders) == 1:
        host, remote = holders[0], []
    elif not request.distributed_inference_across_workers:
        fit.rejections.add("the selected GPUs are on several workers, and distributed inference is off")
        return []
    else:
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
    devices = [*sorted(remote, key=free_vram), *ascending(host.worker, host.gpus)]
    if len(devices) > fit.max_devices:
        fit.rejections.add(
            "the GPU selector names {count} GPUs; {why}",
            count=len(devices),
            why="--split-mode none runs every layer on one GPU"
            if fit.max_devices == 1
            else f"llama.cpp splits a model over at most {MAX_DEVICES} devices",
        )
        return []
    rpc = len(remote)
    proportions = fit.devices.estimate.options.tensor_split
    if proportions:  # the user's split over the selected GPUs, in the order the selector names them
        order = {gpu_id: i for i, gpu_id in enumerate(request.gpu_ids)}
        devices = sorted(remote, key=lambda d: order[d[1].id]) + [
            (host.worker, g) for g in sorted(host.gpus, key=lambda g: order[g.id])
        ]
        return _user_counts_on(fit, host, devices, rpc, list(proportions), asked)
    if asked is None or asked >= fit.layers:
        settled = fit.devices.settle(devices, rpc, fit.split_all, keep_empty=True)
        if settled is not None:
            candidate = fit.devices.candidate_on(host.worker, *settled)
            return [candidate] if candidate is not None else []
        capacity = Bytes(sum(max(free_vram(d), 0) for d in devices))
        if not request.cpu_offloading:
            fit.rejections.add(
                "the selected GPUs together cannot hold the model: {free} allocatable, every layer needs "
                "{need} plus a compute buffer on each GPU; allowing CPU offloading puts the rest in RAM",
                free=capacity,
                need=Bytes(fit.full_vram),
            )
            return []
        limit, exact = fit.layers - 1, False
    elif not request.cpu_offloading:
        fit.rejections.add(NGL_WITHOUT_OFFLOADING, asked=asked, cpu=fit.layers - asked, total=fit.layers)
        return []
    else:
        limit, exact = asked, True
    settled = fit.devices.settle(devices, rpc, fit.split_up_to(limit, exact), keep_empty=True)
    if settled is None:
        fit.nothing_fits(host.worker, [g for _, g in devices], limit, exact)
        return []
    candidate = fit.devices.candidate_on(host.worker, *settled)
    return [candidate] if candidate is not None else []


def user_split(fit: Tiers, eligible: list[Eligible], asked: int | None) -> list[Candidate]:
    """--tensor-split: llama.cpp gives device i the layers its proportions say (the worker passes the
    user's flag, not the scheduler's), so each placement is the fewest-GPU one worker can take with those
    counts, the largest share on the roomiest GPU. Across workers the user's proportions would cover RPC
    servers too, which the scheduler does not guess: one worker only."""
    proportions = list(fit.devices.estimate.options.tensor_split or [])
    while proportions and not proportions[-1]:
        proportions.pop()  # trailing zeros: devices that get nothing
    flag = ",".join(f"{p:g}" for p in fit.devices.estimate.options.tensor_split or [])
    if not proportions:
        fit.rejections.add(
            "--tensor-split {flag} lets llama.cpp split by free memory, which no claim can follow: give "
            "proportions (e.g. 3,1) or remove it",
            flag=flag,
        )
        return []
    if len(proportions) > fit.max_devices:
        fit.rejections.add(
            "--tensor-split {flag} names {count} devices; {why}",
            flag=flag,
            count=len(proportions),
            why="--split-mode none runs every layer on one GPU"
            if fit.max_devices == 1
            else f"llama.cpp takes at most {MAX_DEVICES}",
        )
        return []
    counts = layers_from_tensor_split(proportions, fit.layers if asked is None else asked, fit.layers)
    needs = fit.plan.vram(counts)
    by_need = sorted(range(len(needs)), key=lambda i: -needs[i])
    pick = Pick(fit.request.placement_strategy)
    for entry in eligible:
        worker = entry.worker
        gpus = sorted(entry.gpus, key=lambda g: -worker.vram_free.get(g.index, 0))
        if len(gpus) < len(counts):
            continue
        chosen: list[Device | None] = [None] * len(counts)
        for position, gpu in zip(by_need, gpus, strict=False):
            chosen[position] = (worker, gpu)
        devices = [d for d in chosen if d is not None]
        if all(free_vram(d) >= need for d, need in zip(devices, needs, strict=True)):
            pick.offer(fit.devices.option(worker, devices, 0, counts))
        else:
            fit.rejections.add(
                "worker {worker}: --tensor-split {flag} puts {needs} on its roomiest GPUs, which have {free} "
                "allocatable",
                worker=worker.name,
                flag=flag,
                needs=" + ".join(f"{Bytes(n)}" for n in needs),
                free=" + ".join(f"{Bytes(free_vram(d))}" for d in devices),
            )
    if pick.best is None:
        return []
    return [fit.devices.build(pick.best)]


def _user_counts_on(
    fit: Tiers,
    host: Eligible,
    devices: list[Device],
    rpc: int,
    proportions: list[float],
    asked: int | None,
) -> list[Candidate]:
    """The user's --tensor-split over exactly these devices (missing proportions are 0, extra ones unused)."""
    proportions = (proportions + [0.0] * len(devices))[: len(devices)]
    if not any(proportions):
        fit.rejections.add("--tensor-split gives the selected GPUs no layers: give each a proportion")
        return []
    counts = layers_from_tensor_split(proportions, fit.layers if asked is None else asked, fit.layers)
    needs = fit.plan.vram(counts, rpc)
    if any(free_vram(d) < need for d, need in zip(devices, needs, strict=True)):
        fit.rejections.add(
            "the selected GPUs with the user's --tensor-split: they have {free} allocatable, it puts {needs} "
            "on them",
            free=" + ".join(f"{Bytes(free_vram(d))}" for d in devices),
            needs=" + ".join(f"{Bytes(n)}" for n in needs),
        )
        return []
    candidate = fit.devices.candidate_on(host.worker, devices, rpc, counts)
    return [candidate] if candidate is not None else []
