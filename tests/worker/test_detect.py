"""What a worker reports about its machine."""

from __future__ import annotations

from gpustack.schemas.workers import GPUDevice, GPUType
from gpustack.worker.detect import detect_status


def test_status_has_the_system_facts_and_the_declared_gpus_with_cluster_ids() -> None:
    virtual = [
        GPUDevice(index=0, name="NVIDIA A100 80GB", vendor="NVIDIA", type=GPUType.CUDA, virtual=True),
        GPUDevice(index=1, name="Ascend 910B", vendor="Huawei", type=GPUType.NPU, virtual=True),
    ]
    status = detect_status("gpu-a", virtual)
    assert status.cpu.total > 0 and status.memory.total > 0 and status.memory.used > 0
    assert status.os.name and status.kernel.architecture and status.uptime.uptime > 0
    assert any(fs.mount_point == "/" for fs in status.filesystem)
    assert [gpu.id for gpu in status.gpu_devices] == ["gpu-a:cuda:0", "gpu-a:npu:1"]
    assert virtual[0].id == ""  # the configured devices themselves are not modified


def test_a_machine_without_gpus_reports_an_empty_list() -> None:
    assert detect_status("cpu-box", []).gpu_devices == []
