"""Placements cross from scheduler to worker as types; instances stored in the old shape still read."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from gpustack.schemas.models import ModelInstancePublic
from gpustack.schemas.placement import (
    DeviceLayout,
    LayerLayout,
    ParallelLayout,
    PlacementDetail,
    PlacementMode,
)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            {"mode": "rpc", "engine": {"gpu_layers": "81", "tensor_split": "32,32,17", "rpc": "a:1,b:2"}},
            PlacementDetail(
                mode=PlacementMode.RPC,
                layout=LayerLayout(gpu_layers=81, tensor_split=[32, 32, 17], rpc=["a:1", "b:2"]),
            ),
        ),
        (
            {"mode": "cpu", "engine": {"gpu_layers": "0", "threads": "2"}},
            PlacementDetail(mode=PlacementMode.CPU, layout=LayerLayout(gpu_layers=0, threads=2)),
        ),
        (
            {"mode": "multi-worker", "engine": {"workers": "2", "tensor_parallel_size": "4"}},
            PlacementDetail(
                mode=PlacementMode.MULTI_WORKER, layout=ParallelLayout(workers=2, tensor_parallel_size=4)
            ),
        ),
        ({"mode": "gpu", "engine": {}}, PlacementDetail(mode=PlacementMode.GPU, layout=None)),
    ],
)
def test_placements_stored_as_engine_strings_read_into_typed_layouts(
    stored: dict, expected: PlacementDetail
) -> None:
    assert PlacementDetail.model_validate(stored) == expected


def test_the_typed_shape_round_trips_and_the_mode_is_checked() -> None:
    detail = PlacementDetail(
        mode=PlacementMode.TENSOR_PARALLEL, layout=ParallelLayout(tensor_parallel_size=2)
    )
    stored = detail.model_dump(mode="json")
    assert stored == {
        "mode": "tensor-parallel",
        "layout": {
            "kind": "parallel",
            "tensor_parallel_size": 2,
            "pipeline_parallel_size": None,
            "workers": 1,
            "devices_per_worker": None,
            "max_model_len": None,
            "cpu_kv_cache_gib": None,
            "ray_head_port": None,
        },
    }
    assert PlacementDetail.model_validate(stored) == detail
    assert PlacementDetail(mode=PlacementMode.CPU, layout=DeviceLayout()).rpc_servers == []
    with pytest.raises(ValidationError):
        PlacementDetail.model_validate({"mode": "teleport"})


def test_an_instance_stored_before_layouts_had_types_is_served_in_the_typed_shape() -> None:
    now = datetime.now(timezone.utc)
    row = {
        "id": 1, "name": "m-1", "model_id": 1, "model_name": "m", "worker_id": 1, "worker_name": "w",
        "worker_ip": "10.0.0.1", "port": 40000, "pid": 7, "state": "running", "state_message": "",
        "restart_count": 0, "last_restart_at": None, "computed_resource_claim": None, "gpu_indexes": [0],
        "placement": {"mode": "partial-offload", "engine": {"gpu_layers": "20"}},
        "resolved_path": None, "created_at": now, "updated_at": now,
    }  # fmt: skip
    public = ModelInstancePublic.model_validate(row).model_dump(mode="json")
    assert public["placement"]["layout"]["gpu_layers"] == 20 and "engine" not in public["placement"]
