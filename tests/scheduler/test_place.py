"""The first placement policy: one GPU with the whole model, else the CPU; every refusal has a reason."""

from __future__ import annotations

from gpustack.scheduler.cluster import GPUSnapshot, WorkerSnapshot
from gpustack.scheduler.place import MemoryRequirement, NoPlacement, Placement, PlacementRequest, place
from gpustack.schemas.models import PlacementStrategy, ResourceClaim

GiB = 1024**3

NEED = MemoryRequirement(
    cpu_only_ram=6 * GiB, gpu_ram=1 * GiB, gpu_vram=5 * GiB, total_layers=33, description="x"
)


def gpu_worker(worker_id: int, name: str, gpus: list[int], ram: int = 64 * GiB, **kwargs) -> WorkerSnapshot:
    return WorkerSnapshot(
        id=worker_id,
        name=name,
        state=kwargs.pop("state", "ready"),
        state_message=kwargs.pop("state_message", ""),
        labels=kwargs.pop("labels", {"os": "linux"}),
        ram_total=ram,
        ram_reserved=2 * GiB,
        gpus=[
            GPUSnapshot(
                index=i, id=f"{name}:cuda:{i}", name="NVIDIA GeForce RTX 4090", total=size, reserved=1 * GiB
            )
            for i, size in enumerate(gpus)
        ],
        **kwargs,
    )


def request(**kwargs) -> PlacementRequest:
    return PlacementRequest(model_name="m", requirement=NEED, **kwargs)


def test_a_model_that_fits_one_gpu_goes_on_a_gpu_before_the_cpu() -> None:
    result = place(request(), [gpu_worker(1, "cpu-box", []), gpu_worker(2, "gpu-a", [24 * GiB])])
    assert isinstance(result, Placement)
    assert (result.worker_name, result.gpu_indexes) == ("gpu-a", [0])
    assert result.claim.vram == {0: 5 * GiB} and result.claim.ram == 1 * GiB


def test_cpu_only_worker_runs_it_in_ram() -> None:
    result = place(request(), [gpu_worker(1, "cpu-box", [])])
    assert isinstance(result, Placement)
    assert result.gpu_indexes == [] and result.claim.ram == 6 * GiB and result.claim.vram == {}


def test_pending_instance_names_each_rejected_gpu() -> None:
    worker = gpu_worker(1, "gpu-a", [8 * GiB, 24 * GiB], ram=6 * GiB)
    worker.add_claim(ResourceClaim(vram={0: 4 * GiB, 1: 19 * GiB}))
    result = place(request(cpu_offloading=False), [worker])
    assert isinstance(result, NoPlacement)
    assert result.reasons == [
        "worker gpu-a, GPU 0 (NVIDIA GeForce RTX 4090): 3.0 GiB allocatable, needs 5.0 GiB",
        "worker gpu-a, GPU 1 (NVIDIA GeForce RTX 4090): 4.0 GiB allocatable, needs 5.0 GiB",
        "worker gpu-a: CPU offloading is off, so the model must fit on a GPU",
    ]


def test_error_and_downloading_instances_still_hold_their_memory() -> None:
    worker = gpu_worker(1, "cpu-box", [], ram=10 * GiB)
    worker.add_claim(ResourceClaim(ram=3 * GiB))  # e.g. an instance in error
    result = place(request(), [worker])
    assert isinstance(result, NoPlacement)
    assert "worker cpu-box: 5.0 GiB RAM allocatable, needs 6.0 GiB to run on the CPU" in result.reasons


def test_not_ready_worker_is_skipped_with_its_reason() -> None:
    down = gpu_worker(1, "gpu-a", [24 * GiB], state="not_ready", state_message="no heartbeat for 16s")
    result = place(request(), [down])
    assert isinstance(result, NoPlacement)
    assert result.reasons == ["worker gpu-a: not_ready (no heartbeat for 16s)"]


def test_label_selector_must_match_every_key() -> None:
    mac = gpu_worker(1, "mac-1", [], labels={"os": "darwin"})
    linux = gpu_worker(2, "linux-1", [], labels={"os": "linux"})
    result = place(request(worker_selector={"os": "linux"}), [mac, linux])
    assert isinstance(result, Placement) and result.worker_name == "linux-1"
    refused = place(request(worker_selector={"os": "linux"}), [mac])
    assert isinstance(refused, NoPlacement)
    assert refused.reasons == ["worker mac-1: label os=linux required, worker has os=darwin"]


def test_gpu_selector_uses_exactly_the_chosen_gpus() -> None:
    worker = gpu_worker(1, "gpu-a", [24 * GiB, 24 * GiB])
    result = place(request(gpu_ids=("gpu-a:cuda:1",)), [worker])
    assert isinstance(result, Placement) and result.gpu_indexes == [1]
    refused = place(request(gpu_ids=("gpu-b:cuda:0",)), [worker])
    assert isinstance(refused, NoPlacement)
    assert "none of the selected GPUs" in refused.reasons[0]


def test_binpack_fills_the_fullest_gpu_and_spread_the_emptiest() -> None:
    def cluster() -> list[WorkerSnapshot]:
        busy = gpu_worker(1, "busy", [24 * GiB])
        busy.add_claim(ResourceClaim(vram={0: 12 * GiB}))
        return [busy, gpu_worker(2, "idle", [24 * GiB])]

    packed = place(request(placement_strategy=PlacementStrategy.BINPACK), cluster())
    spread = place(request(placement_strategy=PlacementStrategy.SPREAD), cluster())
    assert isinstance(packed, Placement) and packed.worker_name == "busy"
    assert isinstance(spread, Placement) and spread.worker_name == "idle"


def test_no_workers_at_all_says_how_to_add_one() -> None:
    result = place(request(), [])
    assert isinstance(result, NoPlacement)
    assert "no workers have registered" in result.message()
    assert "--ctx-size" in result.message()
