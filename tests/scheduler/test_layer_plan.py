"""The closed-form layer plan: the same memory as the estimate's split, and the most layers that fit."""

from __future__ import annotations

import itertools
import random

import pytest

from gpustack.estimate.gguf import read_gguf_header
from gpustack.estimate.llama_box import LlamaBoxEstimate, estimate_llama_box, parse_llama_box_options
from gpustack.estimate.llama_box_options import with_gpustack_defaults
from gpustack.scheduler.fit.layer_plan import MAX_DEVICES, LayerPlanner
from tests.estimate.test_gguf import write_model
from tests.estimate.test_gguf_mmproj import write_projector
from tests.scheduler.fixtures import GiB, deepseek_r1_iq2, estimate, llama_8b, llama_70b


@pytest.fixture(scope="module")
def estimates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LlamaBoxEstimate]:
    directory = tmp_path_factory.mktemp("plan")
    found = {
        "8b": estimate(llama_8b(directory)),
        "70b -nkvo": estimate(llama_70b(directory), "-nkvo"),
        "r1": estimate(deepseek_r1_iq2(directory)),
        "8b -sm none": estimate(llama_8b(directory), "-sm", "none"),
    }
    options = with_gpustack_defaults(parse_llama_box_options([]))
    tied = read_gguf_header(write_model(directory / "tied.gguf", n_layer=6, tied=True))
    projector = read_gguf_header(write_projector(directory / "mmproj.gguf"))
    found["tied + projector"] = estimate_llama_box(tied, options, projector=projector)
    return found


def _splits(rng: random.Random, layers: int) -> list[tuple[list[int], int]]:
    made = []
    for _ in range(200):
        devices = rng.randint(0, 6)
        offloaded = rng.randint(0, layers)
        cuts = sorted(rng.randint(0, offloaded) for _ in range(max(devices - 1, 0)))
        counts = [b - a for a, b in zip([0, *cuts], [*cuts, offloaded], strict=True)] if devices else []
        made.append((counts, rng.randint(0, devices)))
    return made


@pytest.mark.parametrize("name", ["8b", "70b -nkvo", "r1", "8b -sm none", "tied + projector"])
def test_closed_form_memory_equals_the_estimates_split(
    estimates: dict[str, LlamaBoxEstimate], name: str
) -> None:
    estimate = estimates[name]
    plan = LayerPlanner(estimate)
    for counts, rpc in _splits(random.Random(name), estimate.total_layers):
        split = estimate.split(counts, rpc_devices=rpc)
        assert plan.vram(counts, rpc) == split.vram, (counts, rpc)
        assert plan.ram(counts, rpc) == split.ram, (counts, rpc)


def test_most_layers_is_the_best_any_split_achieves(estimates: dict[str, LlamaBoxEstimate]) -> None:
    estimate = estimates["8b"]
    plan = LayerPlanner(estimate)
    layers = estimate.total_layers
    rng = random.Random(3)
    for _ in range(60):
        devices = rng.randint(1, 3)
        rpc = rng.randint(0, devices)
        capacities = [rng.randint(0, 6 * GiB) for _ in range(devices)]
        counts = plan.most(capacities, rpc)
        used = plan.vram(counts, rpc)
        assert sum(counts) == 0 or all(u <= c for u, c in zip(used, capacities, strict=True))
        best = 0
        for trial in itertools.product(range(layers + 1), repeat=devices):
            if best < sum(trial) <= layers:
                if all(u <= c for u, c in zip(plan.vram(list(trial), rpc), capacities, strict=True)):
                    best = sum(trial)
        assert sum(counts) == best, (capacities, rpc)


def test_most_layers_respects_a_limit_and_keeps_the_rest_on_the_cpu(
    estimates: dict[str, LlamaBoxEstimate],
) -> None:
    plan = LayerPlanner(estimates["8b"])
    assert sum(plan.most([80 * GiB, 80 * GiB], limit=20)) == 20
    assert plan.most([80 * GiB], limit=0) == [0]
    assert sum(plan.most([80 * GiB, 80 * GiB])) == estimates["8b"].total_layers


def test_balanced_split_follows_the_room_of_each_device(estimates: dict[str, LlamaBoxEstimate]) -> None:
    estimate = estimates["70b -nkvo"]
    plan = LayerPlanner(estimate)
    counts = plan.balanced([30 * GiB, 30 * GiB])
    assert counts is not None and sum(counts) == estimate.total_layers and abs(counts[0] - counts[1]) <= 1
    uneven = plan.balanced([10 * GiB, 40 * GiB])
    assert uneven is not None and uneven[0] < uneven[1]
    assert all(u <= c for u, c in zip(plan.vram(uneven), [10 * GiB, 40 * GiB], strict=True))
    assert plan.balanced([10 * GiB, 10 * GiB]) is None


def test_a_placement_spans_at_most_the_devices_llama_cpp_accepts_in_tensor_split() -> None:
    assert MAX_DEVICES == 15  # llama_max_devices() is 16 and --tensor-split refuses 16 values


def test_projector_needs_room_on_the_first_local_gpu(estimates: dict[str, LlamaBoxEstimate]) -> None:
    estimate = estimates["tied + projector"]
    plan = LayerPlanner(estimate)
    assert estimate.projector is not None
    tiny = estimate.projector.total_bytes - 1
    # two RPC servers, then one local GPU: clip loads on the local GPU, which cannot hold it
    assert plan.most([GiB, GiB, tiny], rpc_devices=2) == [0, 0, 0]
    assert sum(plan.most([GiB, GiB, GiB], rpc_devices=2)) == estimate.total_layers
