"""NVIDIA detection on recorded NVML values (a fake `pynvml`) and recorded `nvidia-smi` runs (fake tools)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.base import DetectionError
from gpustack.worker.detect.nvidia import (
    NvidiaDetector,
    mig_memory_gb,
    parse_nvidia_smi_list,
    parse_nvidia_smi_xml,
)
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia"
MiB = 1024**2
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")

DRIVER_NOT_LOADED = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
    "Make sure that the latest NVIDIA driver is installed and running."
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# --- a fake pynvml --------------------------------------------------------------------------------


class FakeNVMLError(Exception):
    def __init__(self, value: int, text: str) -> None:
        super().__init__(text)
        self.value = value


NOT_SUPPORTED = 3
NOT_FOUND = 6
DRIVER_NOT_LOADED_CODE = 9
GPU_IS_LOST = 15
RM_VERSION_MISMATCH = 18


class FakeNVML:
    """The part of the pynvml module the detector calls, answering from a recorded JSON fixture."""

    NVMLError = FakeNVMLError
    NVML_TEMPERATURE_GPU = 0
    NVML_DEVICE_MIG_ENABLE = 1
    NVML_ERROR_NOT_FOUND = NOT_FOUND
    NVML_GPU_INSTANCE_PROFILE_COUNT = 18

    def __init__(self, recording: str = "", init_error: FakeNVMLError | None = None, fail: str = "") -> None:
        self._devices: list[dict[str, Any]] = json.loads(fixture(recording))["devices"] if recording else []
        self._init_error = init_error
        self._fail = fail  # a function that answers GPU_IS_LOST, as when a GPU falls off the bus
        self.initialised = False
        self.shutdowns = 0

    def _record(self, handle: tuple) -> dict[str, Any]:
        assert self.initialised, "NVML called before nvmlInit"
        gpu = self._devices[handle[1]]
        return gpu["mig_devices"][str(handle[2])] if handle[0] == "mig" else gpu

    def _value(self, handle: tuple, key: str, function: str) -> Any:
        if function == self._fail:
            raise FakeNVMLError(GPU_IS_LOST, "GPU is lost")
        record = self._record(handle)
        if key not in record:
            raise FakeNVMLError(NOT_SUPPORTED, "Not Supported")
        return record[key]

    def nvmlInit(self) -> None:
        if self._init_error:
            raise self._init_error
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        assert self.initialised
        return len(self._devices)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple:
        assert self.initialised
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle: tuple) -> str:
        return self._value(handle, "name", "nvmlDeviceGetName")

    def nvmlDeviceGetUUID(self, handle: tuple) -> str:
        return self._value(handle, "uuid", "nvmlDeviceGetUUID")

    def nvmlDeviceGetMemoryInfo(self, handle: tuple) -> SimpleNamespace:
        memory = self._value(handle, "memory", "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(
            total=memory["total"], used=memory["used"], free=memory["total"] - memory["used"]
        )

    def nvmlDeviceGetUtilizationRates(self, handle: tuple) -> SimpleNamespace:
        return SimpleNamespace(
            gpu=self._value(handle, "utilization", "nvmlDeviceGetUtilizationRates"), memory=0
        )

    def nvmlDeviceGetTemperature(self, handle: tuple, sensor: int) -> int:
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._value(handle, "temperature", "nvmlDeviceGetTemperature")

    def nvmlDeviceGetNumGpuCores(self, handle: tuple) -> int:
        return self._value(handle, "cores", "nvmlDeviceGetNumGpuCores")

    def nvmlDeviceGetMigMode(self, handle: tuple) -> list[int]:
        mode = self._value(handle, "mig_mode", "nvmlDeviceGetMigMode")
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: tuple) -> int:
        return self._value(handle, "max_mig_devices", "nvmlDeviceGetMaxMigDeviceCount")

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: tuple, slot: int) -> tuple:
        if str(slot) not in self._record(handle).get("mig_devices", {}):
            raise FakeNVMLError(NOT_FOUND, "Not Found")
        return ("mig", handle[1], slot)

    def nvmlDeviceGetGpuInstanceId(self, handle: tuple) -> int:
        return self._value(handle, "gpu_instance_id", "nvmlDeviceGetGpuInstanceId")

    def nvmlDeviceGetGpuInstanceById(self, handle: tuple, instance_id: int) -> tuple:
        if str(instance_id) not in self._record(handle).get("gpu_instances", {}):
            raise FakeNVMLError(NOT_FOUND, "Not Found")
        return ("gi", handle[1], instance_id)

    def nvmlGpuInstanceGetInfo(self, instance: tuple) -> SimpleNamespace:
        info = self._devices[instance[1]]["gpu_instances"][str(instance[2])]
        return SimpleNamespace(profileId=info["profileId"])

    def nvmlDeviceGetGpuInstanceProfileInfo(self, handle: tuple, profile: int) -> SimpleNamespace:
        profiles = self._record(handle).get("gpu_instance_profiles", {})
        if str(profile) not in profiles:
            raise FakeNVMLError(NOT_SUPPORTED, "Not Supported")
        return SimpleNamespace(**profiles[str(profile)])


# --- fake command-line tools ------------------------------------------------------------------------


# --- NVML -----------------------------------------------------------------------------------------


def test_nvml_lists_every_card_with_exact_bytes_and_core_counts() -> None:
    nvml = FakeNVML("nvml-2x-rtx4090-one-busy.json")
    devices = NvidiaDetector(nvml=nvml).detect()

    assert [(d.index, d.name, d.vendor, d.type) for d in devices] == [
        (0, "NVIDIA GeForce RTX 4090", "NVIDIA", GPUType.CUDA),
        (1, "NVIDIA GeForce RTX 4090", "NVIDIA", GPUType.CUDA),
    ]
    idle = devices[0]
    assert idle.uuid == "GPU-4a5e6f21-9c3b-2d8e-7f10-a2b3c4d5e6f7"
    assert (idle.memory.total, idle.memory.used) == (24564 * MiB, 363 * MiB)
    assert (idle.core.total, idle.core.utilization_rate, idle.temperature) == (16384, 0.0, 33)
    assert idle.visible_id == "" and idle.id == ""
    assert nvml.shutdowns == 1 and not nvml.initialised


def test_nvml_reports_a_busy_card_as_busy() -> None:
    busy = NvidiaDetector(nvml=FakeNVML("nvml-2x-rtx4090-one-busy.json")).detect()[1]
    assert busy.memory.used == 23472 * MiB
    assert busy.memory.utilization_rate == round(23472 / 24564 * 100, 2)
    assert (busy.core.utilization_rate, busy.temperature) == (97.0, 71)


def test_nvml_mig_instances_replace_their_gpu_and_later_gpus_keep_their_physical_index() -> None:
    devices = NvidiaDetector(nvml=FakeNVML("nvml-2x-a100-one-mig-plain-names.json")).detect()

    assert [(d.index, d.name, d.visible_id) for d in devices] == [
        (0, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"),
        (1, "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "MIG-7f8e9d0c-1b2a-5394-a5b6-c7d8e9f0a1b2"),
        (2, "NVIDIA A100-SXM4-80GB", "1"),
    ]
    large, small, whole = devices
    assert large.uuid == large.visible_id
    assert (large.memory.total, large.memory.used) == (40192 * MiB, 31012 * MiB)
    assert small.memory.total == 9728 * MiB
    # NVML gives a MIG instance neither temperature nor utilization: the GPU's temperature, 0 %.
    assert (large.temperature, large.core.utilization_rate, large.core.total) == (38, 0.0, 0)
    assert (whole.uuid, whole.core.utilization_rate, whole.core.total) == (
        "GPU-9e2f4b61-7a8c-4d3e-b5f6-0c1d2e3f4a5b",
        88.0,
        6912,
    )


def test_nvml_mig_names_from_the_driver_are_kept_and_empty_slots_skipped() -> None:
    devices = NvidiaDetector(nvml=FakeNVML("nvml-h100-mig.json")).detect()
    assert [(d.index, d.name, d.memory.total) for d in devices] == [
        (0, "NVIDIA H100 80GB HBM3 MIG 3g.40gb", 40448 * MiB),
        (1, "NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9984 * MiB),
        (2, "NVIDIA H100 80GB HBM3 MIG 1g.10gb", 9984 * MiB),
    ]
    assert [d.visible_id for d in devices] == [d.uuid for d in devices]
    assert all(d.visible_id.startswith("MIG-") for d in devices)


@pytest.mark.parametrize(
    ("instance_mib", "gpu_mib", "gb"),
    [(40192, 81920, 40), (9728, 81920, 10), (81152, 81920, 80), (4864, 40960, 5), (19968, 40960, 20)]
    + [(9984, 81559, 10), (40448, 81559, 40)],
)
def test_mig_profile_memory_is_named_the_way_nvidia_names_it(
    instance_mib: int, gpu_mib: int, gb: int
) -> None:
    assert mig_memory_gb(instance_mib, gpu_mib * MiB) == gb


def test_a_machine_whose_driver_sees_no_gpu_has_no_devices() -> None:
    assert NvidiaDetector(nvml=FakeNVML()).detect() == []


def test_the_pynvml_module_is_used_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNVML("nvml-h100-mig.json"))
    assert len(NvidiaDetector().detect()) == 3


def test_available_when_nvml_initialises(tools: Path) -> None:
    nvml = FakeNVML("nvml-h100-mig.json")
    assert NvidiaDetector(nvml=nvml).available()
    assert nvml.shutdowns == 1


@posix_only
def test_available_through_nvidia_smi_alone_when_nvml_fails(tools: Path) -> None:
    broken = FakeNVML(init_error=FakeNVMLError(DRIVER_NOT_LOADED_CODE, "Driver Not Loaded"))
    assert not NvidiaDetector(nvml=broken).available()
    fake_tool(tools, "nvidia-smi", {})
    assert NvidiaDetector(nvml=broken).available()


def test_not_available_without_the_binding_or_nvidia_smi(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    assert not NvidiaDetector().available()


# --- the nvidia-smi fallback ------------------------------------------------------------------------


@posix_only
def test_without_the_nvml_binding_nvidia_smi_is_read(tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-q-x-2x-rtx4090-one-busy.xml"), 0)})

    devices = NvidiaDetector().detect()

    assert [(d.index, d.name, d.uuid) for d in devices] == [
        (0, "NVIDIA GeForce RTX 4090", "GPU-4a5e6f21-9c3b-2d8e-7f10-a2b3c4d5e6f7"),
        (1, "NVIDIA GeForce RTX 4090", "GPU-b81c0d2e-5f4a-6b7c-8d9e-0f1a2b3c4d5e"),
    ]
    idle, busy = devices
    assert (idle.memory.total, idle.memory.used, idle.temperature) == (24564 * MiB, 2 * MiB, 33.0)
    assert (busy.memory.used, busy.core.utilization_rate, busy.temperature) == (23126 * MiB, 97.0, 71.0)
    assert busy.core.total == 0  # the XML does not report CUDA cores


@posix_only
def test_nvml_version_mismatch_falls_back_to_nvidia_smi_with_mig_from_its_list(tools: Path) -> None:
    mismatch = FakeNVMLError(RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch.")
    fake_tool(
        tools,
        "nvidia-smi",
        {
            "-q -x": (fixture("smi-q-x-2x-a100-one-mig.xml"), 0),
            "-L": (fixture("smi-L-2x-a100-one-mig.txt"), 0),
        },
    )

    devices = NvidiaDetector(nvml=FakeNVML(init_error=mismatch)).detect()

    assert [(d.index, d.name, d.visible_id) for d in devices] == [
        (0, "NVIDIA A100-SXM4-80GB MIG 3g.40gb", "MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"),
        (1, "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "MIG-7f8e9d0c-1b2a-5394-a5b6-c7d8e9f0a1b2"),
        (2, "NVIDIA A100-SXM4-80GB", "1"),
    ]
    assert (devices[0].memory.total, devices[0].memory.used, devices[0].temperature) == (
        40192 * MiB,
        31012 * MiB,
        38.0,
    )
    assert (devices[2].memory.used, devices[2].core.utilization_rate) == (61234 * MiB, 88.0)


@posix_only
def test_a_gpu_lost_while_nvml_reads_it_falls_back_to_nvidia_smi(tools: Path) -> None:
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-q-x-2x-rtx4090-one-busy.xml"), 0)})
    nvml = FakeNVML("nvml-2x-rtx4090-one-busy.json", fail="nvmlDeviceGetMemoryInfo")
    assert len(NvidiaDetector(nvml=nvml).detect()) == 2
    assert nvml.shutdowns == 1


@posix_only
def test_when_both_fail_the_error_quotes_nvml_and_nvidia_smi_verbatim(tools: Path) -> None:
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-driver-not-loaded.txt"), 9)})
    broken = FakeNVML(init_error=FakeNVMLError(DRIVER_NOT_LOADED_CODE, "Driver Not Loaded"))

    with pytest.raises(DetectionError) as raised:
        NvidiaDetector(nvml=broken).detect()

    message = str(raised.value)
    assert "NVML failed: Driver Not Loaded" in message
    assert DRIVER_NOT_LOADED in message
    assert "exit code 9" in message


@posix_only
def test_a_driver_library_mismatch_reaches_the_user_verbatim(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-version-mismatch.txt"), 18)})
    with pytest.raises(DetectionError) as raised:
        NvidiaDetector().detect()
    assert "Failed to initialize NVML: Driver/library version mismatch" in str(raised.value)
    assert "nvidia-ml-py" in str(raised.value)


def test_without_nvml_or_nvidia_smi_the_error_says_both_are_missing(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(DetectionError, match="nvidia-ml-py.*nvidia-smi is not installed"):
        NvidiaDetector().detect()


@posix_only
def test_nvidia_smi_finding_no_devices_is_an_empty_list(tools: Path) -> None:
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-no-devices.txt"), 6)})
    broken = FakeNVML(init_error=FakeNVMLError(DRIVER_NOT_LOADED_CODE, "Driver Not Loaded"))
    assert NvidiaDetector(nvml=broken).detect() == []


@posix_only
def test_a_hung_nvidia_smi_is_a_detection_error(tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    fake_tool(tools, "nvidia-smi", {"-q -x": ("", 0)}, sleep=30)

    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        NvidiaDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


@posix_only
def test_truncated_nvidia_smi_xml_is_a_detection_error_naming_the_tool(
    tools: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    fake_tool(tools, "nvidia-smi", {"-q -x": (fixture("smi-q-x-truncated.xml"), 0)})
    with pytest.raises(DetectionError, match="nvidia-smi gave output that could not be read"):
        NvidiaDetector().detect()


# --- parsing nvidia-smi's output --------------------------------------------------------------------


@pytest.mark.parametrize(
    "output",
    [
        "",
        "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system.",
        '<?xml version="1.0" ?>\n<nvidia_smi_log>\n\t<attached_gpus>0</attached_gpus>\n</nvidia_smi_log>\n',
        "<nvidia_smi_log><gpu><product_name>NVIDIA L4</product_name>"
        "<fb_memory_usage><total>N/A</total></fb_memory_usage></gpu></nvidia_smi_log>",
        "<nvidia_smi_log><gpu><fb_memory_usage><total>23034 MiB</total></fb_memory_usage>"
        "</gpu></nvidia_smi_log>",
    ],
    ids=["empty", "not-xml", "no-gpu", "memory-not-a-number", "no-name"],
)
def test_unreadable_xml_is_a_detection_error_naming_nvidia_smi(output: str) -> None:
    with pytest.raises(DetectionError, match="^nvidia-smi gave output that could not be read"):
        parse_nvidia_smi_xml(output)


def test_a_mig_instance_without_a_uuid_anywhere_cannot_be_listed() -> None:
    with pytest.raises(DetectionError, match="no UUID for MIG device 0 of GPU 0"):
        parse_nvidia_smi_xml(fixture("smi-q-x-2x-a100-one-mig.xml"), mig_list="")


def test_mig_uuids_in_the_xml_are_used_when_a_driver_gives_them() -> None:
    xml = fixture("smi-q-x-2x-a100-one-mig.xml")
    for slot, uuid in [("0", "MIG-aaaa"), ("1", "MIG-bbbb")]:
        xml = xml.replace(f"<index>{slot}</index>", f"<index>{slot}</index>\n<uuid>{uuid}</uuid>", 1)
    devices = parse_nvidia_smi_xml(xml, mig_list=fixture("smi-L-2x-a100-one-mig.txt"))
    assert [d.visible_id for d in devices] == ["MIG-aaaa", "MIG-bbbb", "1"]


def test_nvidia_smi_list_maps_each_mig_device_to_its_profile_and_uuid() -> None:
    assert parse_nvidia_smi_list(fixture("smi-L-2x-a100-one-mig.txt")) == {
        (0, 0): ("3g.40gb", "MIG-1a2b3c4d-5e6f-5a7b-8c9d-0e1f2a3b4c5d"),
        (0, 1): ("1g.10gb", "MIG-7f8e9d0c-1b2a-5394-a5b6-c7d8e9f0a1b2"),
    }
