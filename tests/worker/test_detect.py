"""What a worker reports about its machine, and how detector failures reach the user."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect import GPUDetection, combine, default_detectors, detect_gpus, detect_status
from gpustack.worker.detect.apple import parse_system_profiler
from gpustack.worker.detect.base import DetectionError, run_tool

GiB = 1024**3


class FakeDetector:
    def __init__(
        self, vendor: str, available: bool = True, devices=(), error: Exception | None = None
    ) -> None:
        self.vendor = vendor
        self._available = available
        self._devices = list(devices)
        self._error = error
        self.ran = False

    def available(self) -> bool:
        return self._available

    def detect(self) -> list[GPUDevice]:
        self.ran = True
        if self._error:
            raise self._error
        return self._devices


def gpu(index: int, gpu_type: GPUType = GPUType.CUDA, name: str = "NVIDIA A100 80GB") -> GPUDevice:
    return GPUDevice(index=index, name=name, vendor="x", type=gpu_type, memory=MemoryInfo(total=80 * GiB))


def test_status_has_the_system_facts_and_the_declared_gpus_with_cluster_ids() -> None:
    virtual = [
        GPUDevice(index=0, name="NVIDIA A100 80GB", vendor="NVIDIA", type=GPUType.CUDA, virtual=True),
        GPUDevice(index=1, name="Ascend 910B", vendor="Huawei", type=GPUType.NPU, virtual=True),
    ]
    status, errors = detect_status("gpu-a", virtual, detectors=[])
    assert errors == []
    assert status.cpu.total > 0 and status.memory.total > 0 and status.memory.used > 0
    assert status.os.name and status.kernel.architecture and status.uptime.uptime > 0
    assert any(fs.mount_point == "/" for fs in status.filesystem)
    assert [g.id for g in status.gpu_devices] == ["gpu-a:cuda:0", "gpu-a:npu:1"]
    assert virtual[0].id == ""  # the configured devices themselves are not modified


def test_a_machine_with_none_of_the_vendor_tools_is_a_clean_cpu_only_worker() -> None:
    # This machine has no GPU, driver or vendor tool: every detector must decline, none may fail.
    status, errors = detect_status("cpu-box", [])
    assert errors == [] and status.gpu_devices == []
    assert {d.vendor for d in default_detectors()} >= {
        "NVIDIA", "AMD", "Hygon", "Huawei", "Moore Threads", "Iluvatar", "Cambricon", "Apple",
    }  # fmt: skip


def test_only_available_detectors_run_and_their_failures_are_reported_not_raised() -> None:
    absent = FakeDetector("Absent", available=False)
    broken = FakeDetector(
        "Huawei",
        error=DetectionError("dcmi model initialized failed, because the device is used. ret is -8020"),
    )
    buggy = FakeDetector("Buggy", error=KeyError("memory"))
    working = FakeDetector("NVIDIA", devices=[gpu(0)])
    result = detect_gpus([absent, broken, buggy, working])
    assert not absent.ran
    assert [d.index for d in result.devices] == [0]
    assert (
        result.errors[0] == "Huawei: dcmi model initialized failed, because the device is used. ret is -8020"
    )
    assert result.errors[1].startswith("Buggy: detection failed unexpectedly: KeyError")


def test_a_virtual_gpu_on_an_index_a_real_one_uses_is_an_error() -> None:
    combined = combine("w", GPUDetection(devices=[gpu(0)]), [gpu(0, GPUType.NPU, "Ascend 910B")])
    assert "GPU index 0 is used by both w:cuda:0 (NVIDIA A100 80GB) and w:npu:0" in combined.errors[0]


def test_run_tool_turns_every_failure_into_a_message(tmp_path: Path) -> None:
    with pytest.raises(DetectionError, match="no-such-tool is not installed or not on PATH"):
        run_tool(["no-such-tool"])
    failing = tmp_path / "failing"
    failing.write_text("#!/bin/sh\necho 'the driver says no' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(DetectionError, match=r"failed \(exit code 3\): the driver says no"):
        run_tool([str(failing)])
    hung = tmp_path / "hung"
    hung.write_text("#!/bin/sh\nsleep 10\n")
    hung.chmod(0o755)
    with pytest.raises(DetectionError, match="did not answer within 1s"):
        run_tool([str(hung)], timeout=1)


def test_apple_silicon_reads_its_gpu_from_system_profiler() -> None:
    # system_profiler SPDisplaysDataType -json on macOS 14.5, Apple M2 Max (38-core GPU).
    output = json.dumps(
        {
            "SPDisplaysDataType": [
                {"_name": "Apple M2 Max", "sppci_model": "Apple M2 Max", "sppci_cores": "38"}
            ]
        }
    )
    assert parse_system_profiler(output) == ("Apple M2 Max", 38)
    with pytest.raises(DetectionError, match="could not be read"):
        parse_system_profiler("{truncated")


def test_gpustack_detect_prints_the_status_as_json(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        "resources:\n  gpu_devices:\n    - {name: NVIDIA A100 80GB, type: cuda, memory: 80GiB}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gpustack", "detect", "--data-dir", str(tmp_path), "--worker-name", "node-1",
         "--config-file", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "node-1" and report["state"] == "ready"
    assert report["status"]["gpu_devices"][0]["id"] == "node-1:cuda:0"
    assert report["status"]["memory"]["total"] > 0
