"""Apple silicon: one Metal (`mps`) device whose memory is the machine's unified memory."""

from __future__ import annotations

import json
import platform

import psutil

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import DetectionError, run_tool


def parse_system_profiler(output: str) -> tuple[str, int]:
    """(chip name, GPU core count) from `system_profiler SPDisplaysDataType -json`."""
    try:
        displays = json.loads(output)["SPDisplaysDataType"]
        for display in displays:
            if "sppci_cores" in display or str(display.get("sppci_model", "")).startswith("Apple"):
                return str(display.get("sppci_model", "Apple GPU")), int(display.get("sppci_cores", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise DetectionError(f"system_profiler gave output that could not be read: {exc}") from None
    raise DetectionError("system_profiler lists no Apple GPU")


class AppleDetector:
    vendor = "Apple"

    def available(self) -> bool:
        return platform.system() == "Darwin" and platform.machine() == "arm64"

    def detect(self) -> list[GPUDevice]:
        name, cores = parse_system_profiler(run_tool(["system_profiler", "SPDisplaysDataType", "-json"]))
        memory = psutil.virtual_memory()
        return [
            GPUDevice(
                index=0,
                name=name,
                vendor=self.vendor,
                type=GPUType.MPS,
                uuid="",
                # Unified memory: the GPU's memory is the machine's RAM, which the worker also reports;
                # the scheduler counts it once (see WorkerSnapshot.unified_memory).
                memory=MemoryInfo(
                    total=memory.total,
                    used=memory.total - memory.available,
                    utilization_rate=memory.percent,
                    is_unified_memory=True,
                ),
                core=GPUCoreInfo(total=cores),
            )
        ]
