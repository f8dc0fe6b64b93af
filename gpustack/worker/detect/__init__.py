"""What this machine has: system status and accelerators (vendor detectors come with their own issue)."""

from __future__ import annotations

from gpustack.schemas.workers import GPUDevice, WorkerStatus
from gpustack.worker.detect.system import detect_system


def gpu_id(worker_name: str, device: GPUDevice) -> str:
    return f"{worker_name}:{device.type.value}:{device.index}"


def detect_status(worker_name: str, virtual_gpus: list[GPUDevice]) -> WorkerStatus:
    """The status a worker reports: system facts plus its GPUs, each with its cluster-wide id.

    Blocking (psutil reads /proc and may stat slow mounts): call it in a thread.
    """
    status = detect_system()
    devices = [device.model_copy(deep=True) for device in virtual_gpus]
    for device in devices:
        device.id = gpu_id(worker_name, device)
    status.gpu_devices = devices
    return status
