"""What this machine has: system status and accelerators, one detector per vendor. Pure of the server."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpustack.schemas.workers import GPUDevice, WorkerStatus
from gpustack.worker.detect.amd import AmdDetector
from gpustack.worker.detect.apple import AppleDetector
from gpustack.worker.detect.ascend import AscendDetector
from gpustack.worker.detect.base import DetectionError, Detector
from gpustack.worker.detect.cambricon import CambriconDetector
from gpustack.worker.detect.hygon import HygonDetector
from gpustack.worker.detect.iluvatar import IluvatarDetector
from gpustack.worker.detect.mthreads import MthreadsDetector
from gpustack.worker.detect.nvidia import NvidiaDetector
from gpustack.worker.detect.system import detect_system

logger = logging.getLogger(__name__)


def default_detectors() -> list[Detector]:
    return [
        NvidiaDetector(),
        AmdDetector(),
        HygonDetector(),
        AscendDetector(),
        MthreadsDetector(),
        IluvatarDetector(),
        CambriconDetector(),
        AppleDetector(),
    ]


@dataclass
class GPUDetection:
    """The accelerators found, and why any vendor's could not be read (each error is for the user)."""

    devices: list[GPUDevice] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def detect_gpus(detectors: Sequence[Detector]) -> GPUDetection:
    """Run every detector whose library or tool this machine has. Blocking: call it in a thread."""
    result = GPUDetection()
    for detector in detectors:
        try:
            if not detector.available():
                continue
            result.devices.extend(detector.detect())
        except DetectionError as exc:
            result.errors.append(f"{detector.vendor}: {exc}")
        except Exception as exc:
            logger.exception("%s detection failed unexpectedly", detector.vendor)
            result.errors.append(f"{detector.vendor}: detection failed unexpectedly: {exc!r}")
    return result


def gpu_id(worker_name: str, device: GPUDevice) -> str:
    return f"{worker_name}:{device.type.value}:{device.index}"


def combine(worker_name: str, detection: GPUDetection, virtual_gpus: Sequence[GPUDevice]) -> GPUDetection:
    """Detected and virtual devices with their cluster-wide ids; clashing indexes are an error."""
    devices = [device.model_copy(deep=True) for device in [*detection.devices, *virtual_gpus]]
    errors = list(detection.errors)
    seen: dict[int, GPUDevice] = {}
    for device in devices:
        device.id = gpu_id(worker_name, device)
        other = seen.setdefault(device.index, device)
        if other is not device:
            errors.append(
                f"GPU index {device.index} is used by both {other.id} ({other.name}) and {device.id} "
                f"({device.name}); give the resources: gpu_devices entries indexes no detected GPU uses"
            )
    return GPUDetection(devices, errors)


def detect_status(
    worker_name: str, virtual_gpus: Sequence[GPUDevice], detectors: Sequence[Detector] | None = None
) -> tuple[WorkerStatus, list[str]]:
    """The status a worker reports, and the detection errors that make it not ready. Blocking."""
    status = detect_system()
    detection = combine(
        worker_name, detect_gpus(default_detectors() if detectors is None else detectors), virtual_gpus
    )
    status.gpu_devices = detection.devices
    return status, detection.errors
