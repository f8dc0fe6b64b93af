"""NVIDIA GPUs and their MIG instances: through NVML (nvidia-ml-py), else through `nvidia-smi`.

Index scheme (both sources): devices are numbered 0, 1, 2, ... in the driver's order of physical GPUs.
A GPU with MIG mode enabled is replaced by its MIG instances, each taking the next number, in the
driver's order of instances; the parent itself is not listed (its memory is the instances'). A GPU
whose number differs from its physical index carries that index in `visible_id`; a MIG instance
carries its "MIG-..." UUID there, which is what CUDA_VISIBLE_DEVICES takes.
"""

from __future__ import annotations

import importlib
import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import (
    TOOL_TIMEOUT_SECONDS,
    DetectionError,
    malformed,
    run_tool,
    tool_on_path,
)

VENDOR = "NVIDIA"
SMI = "nvidia-smi"
MiB = 1024**2
GiB = 1024**3
NO_DEVICES = "No devices were found"

# `nvidia-smi -L`: "GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-...)", under it for each MIG instance
# "  MIG 3g.40gb     Device  0: (UUID: MIG-...)".
_LIST_GPU = re.compile(r"^GPU (\d+): .* \(UUID: ([^)]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: ([^)]+)\)\s*$")
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(MiB|%|C)?\s*$")


def _memory(total: int, used: int) -> MemoryInfo:
    rate = round(used / total * 100, 2) if total > 0 else 0.0
    return MemoryInfo(total=total, used=used, utilization_rate=rate)


def _device(
    index: int,
    name: str,
    uuid: str,
    memory: MemoryInfo,
    utilization: float = 0.0,
    cores: int = 0,
    temperature: float | None = None,
    visible_id: str = "",
) -> GPUDevice:
    return GPUDevice(
        index=index,
        name=name,
        vendor=VENDOR,
        type=GPUType.CUDA,
        uuid=uuid,
        memory=memory,
        core=GPUCoreInfo(total=cores, utilization_rate=utilization),
        temperature=temperature,
        visible_id=visible_id,
    )


def _physical_visible_id(index: int, physical: int) -> str:
    return "" if index == physical else str(physical)


# --- NVML ------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(nvml: Any, function: str, *args: Any) -> Any:
    """A value not every GPU, MIG instance or binding version offers (utilization, temperature,
    core count): None when it is not available."""
    call = getattr(nvml, function, None)
    if call is None:
        return None
    try:
        return call(*args)
    except nvml.NVMLError:
        return None


def mig_memory_gb(instance_mib: int, parent_total_bytes: int) -> int:
    """The "40gb" of a MIG profile name: NVIDIA rounds the instance's share of the GPU's memory up to
    eighths and applies it to the GPU's size in whole GiB (A100 80GB: 40192 MiB -> 40)."""
    if parent_total_bytes <= 0:
        return round(instance_mib / 1024)
    eighths = math.ceil(instance_mib * MiB / parent_total_bytes * 8) / 8
    return round(eighths * math.ceil(parent_total_bytes / GiB))


def _mig_profile(nvml: Any, parent: Any, mig: Any, parent_total: int) -> str:
    """The instance's GPU instance profile, such as 3g.40gb; empty when the driver does not say."""
    try:
        instance = nvml.nvmlDeviceGetGpuInstanceById(parent, nvml.nvmlDeviceGetGpuInstanceId(mig))
        profile_id = nvml.nvmlGpuInstanceGetInfo(instance).profileId
    except (nvml.NVMLError, AttributeError):
        return ""
    for profile in range(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0)):
        info = _optional(nvml, "nvmlDeviceGetGpuInstanceProfileInfo", parent, profile)
        if info is not None and info.id == profile_id:
            return f"{info.sliceCount}g.{mig_memory_gb(info.memorySizeMB, parent_total)}gb"
    return ""


def _mig_handles(nvml: Any, parent: Any) -> list[Any]:
    handles = []
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(parent)):
        try:
            handles.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, slot))
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != nvml.NVML_ERROR_NOT_FOUND:  # an empty slot is not an error
                raise
    return handles


def _mig_enabled(nvml: Any, handle: Any) -> bool:
    mode = _optional(nvml, "nvmlDeviceGetMigMode", handle)  # not supported: a GPU without MIG
    return mode is not None and mode[0] == nvml.NVML_DEVICE_MIG_ENABLE


def _utilization(nvml: Any, handle: Any) -> float:
    rates = _optional(nvml, "nvmlDeviceGetUtilizationRates", handle)  # MIG instances: not supported
    return float(rates.gpu) if rates is not None else 0.0


def _nvml_memory(nvml: Any, handle: Any) -> MemoryInfo:
    info = nvml.nvmlDeviceGetMemoryInfo(handle)
    return _memory(int(info.total), int(info.used))


def _nvml_migs(nvml: Any, parent: Any, parent_name: str, first_index: int) -> list[GPUDevice]:
    parent_total = int(nvml.nvmlDeviceGetMemoryInfo(parent).total)
    parent_temperature = _optional(nvml, "nvmlDeviceGetTemperature", parent, nvml.NVML_TEMPERATURE_GPU)
    devices: list[GPUDevice] = []
    for mig in _mig_handles(nvml, parent):
        name = _text(nvml.nvmlDeviceGetName(mig))
        if " MIG " not in f"{name} ":  # older drivers name an instance like its parent
            name = f"{parent_name} MIG {_mig_profile(nvml, parent, mig, parent_total)}".rstrip()
        uuid = _text(nvml.nvmlDeviceGetUUID(mig))
        temperature = _optional(nvml, "nvmlDeviceGetTemperature", mig, nvml.NVML_TEMPERATURE_GPU)
        devices.append(
            _device(
                index=first_index + len(devices),
                name=name,
                uuid=uuid,
                memory=_nvml_memory(nvml, mig),
                utilization=_utilization(nvml, mig),
                cores=_optional(nvml, "nvmlDeviceGetNumGpuCores", mig) or 0,
                temperature=temperature if temperature is not None else parent_temperature,
                visible_id=uuid,
            )
        )
    return devices


def read_nvml(nvml: Any) -> list[GPUDevice]:
    """The devices NVML reports; raises the binding's NVMLError when the library or driver fails."""
    nvml.nvmlInit()
    try:
        devices: list[GPUDevice] = []
        for physical in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(physical)
            name = _text(nvml.nvmlDeviceGetName(handle))
            if _mig_enabled(nvml, handle):
                devices.extend(_nvml_migs(nvml, handle, name, len(devices)))
                continue
            devices.append(
                _device(
                    index=len(devices),
                    name=name,
                    uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
                    memory=_nvml_memory(nvml, handle),
                    utilization=_utilization(nvml, handle),
                    cores=_optional(nvml, "nvmlDeviceGetNumGpuCores", handle) or 0,
                    temperature=_optional(
                        nvml, "nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU
                    ),
                    visible_id=_physical_visible_id(len(devices), physical),
                )
            )
        return devices
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass  # already failed or never initialised; the reading above decides the result


# --- nvidia-smi ------------------------------------------------------------------------------------


def parse_nvidia_smi_list(output: str) -> dict[tuple[int, int], tuple[str, str]]:
    """`nvidia-smi -L`: (GPU index, MIG device index) -> (profile such as "3g.40gb", "MIG-..." UUID)."""
    migs: dict[tuple[int, int], tuple[str, str]] = {}
    gpu: int | None = None
    for line in output.splitlines():
        if match := _LIST_GPU.match(line):
            gpu = int(match.group(1))
        elif (match := _LIST_MIG.match(line)) and gpu is not None:
            migs[(gpu, int(match.group(2)))] = (match.group(1), match.group(3))
    return migs


def _find_text(element: ET.Element, path: str) -> str:
    found = element.find(path)
    return (found.text or "").strip() if found is not None else ""


def _quantity(element: ET.Element, path: str) -> float | None:
    """A number such as "24564 MiB", "97 %" or "41 C"; None for "N/A", "[Insufficient Permissions]"."""
    match = _QUANTITY.match(_find_text(element, path))
    return float(match.group(1)) if match else None


def _mib(element: ET.Element, path: str, output: str) -> int:
    value = _quantity(element, path)
    if value is None:
        raise malformed(SMI, f"no {path} in MiB for a GPU", output)
    return int(value) * MiB


def _used_mib(element: ET.Element) -> int:
    return int(_quantity(element, "fb_memory_usage/used") or 0) * MiB  # "N/A" on a MIG parent


def _needs_mig_list(root: ET.Element) -> bool:
    return any(_find_text(mig, "uuid") == "" for mig in root.iter("mig_device"))


def _smi_gpu(gpu: ET.Element, index: int, physical: int, output: str) -> GPUDevice:
    return _device(
        index=index,
        name=_find_text(gpu, "product_name"),
        uuid=_find_text(gpu, "uuid"),
        memory=_memory(_mib(gpu, "fb_memory_usage/total", output), _used_mib(gpu)),
        utilization=_quantity(gpu, "utilization/gpu_util") or 0.0,
        temperature=_quantity(gpu, "temperature/gpu_temp"),
        visible_id=_physical_visible_id(index, physical),
    )


def _smi_migs(
    gpu: ET.Element,
    first_index: int,
    physical: int,
    listed: dict[tuple[int, int], tuple[str, str]],
    output: str,
) -> list[GPUDevice]:
    devices: list[GPUDevice] = []
    for mig in gpu.findall("mig_devices/mig_device"):
        slot = _find_text(mig, "index")
        profile, listed_uuid = listed.get((physical, int(slot) if slot.isdigit() else -1), ("", ""))
        uuid = _find_text(mig, "uuid") or listed_uuid
        if not uuid:
            raise DetectionError(
                f"nvidia-smi gives no UUID for MIG device {slot} of GPU {physical}, so it cannot be "
                "assigned to an instance; `nvidia-smi -L` should list it"
            )
        devices.append(
            _device(
                index=first_index + len(devices),
                name=f"{_find_text(gpu, 'product_name')} MIG {profile}".rstrip(),
                uuid=uuid,
                memory=_memory(_mib(mig, "fb_memory_usage/total", output), _used_mib(mig)),
                temperature=_quantity(gpu, "temperature/gpu_temp"),  # an instance has its GPU's
                visible_id=uuid,
            )
        )
    return devices


def parse_nvidia_smi_xml(output: str, mig_list: str = "") -> list[GPUDevice]:
    """`nvidia-smi -q -x`, with `nvidia-smi -L` for MIG instances (their XML has neither a UUID nor a
    profile name on most drivers). Core counts are 0: the XML does not report CUDA cores."""
    try:
        root = ET.fromstring(output)
    except ET.ParseError as exc:
        raise malformed(SMI, f"not XML: {exc}", output) from None
    gpus = root.findall("gpu")
    if root.tag != "nvidia_smi_log" or not gpus:
        raise malformed(SMI, "no <gpu> in <nvidia_smi_log>", output)
    listed = parse_nvidia_smi_list(mig_list)
    devices: list[GPUDevice] = []
    for physical, gpu in enumerate(gpus):
        if not _find_text(gpu, "product_name"):
            raise malformed(SMI, f"GPU {physical} has no product_name", output)
        if _find_text(gpu, "mig_mode/current_mig") == "Enabled":
            devices.extend(_smi_migs(gpu, len(devices), physical, listed, output))
        else:
            devices.append(_smi_gpu(gpu, len(devices), physical, output))
    return devices


# --- the detector ----------------------------------------------------------------------------------


class NvidiaDetector:
    """NVML first (exact bytes, MIG profiles, no process to start); `nvidia-smi` when NVML is unusable."""

    vendor = VENDOR

    def __init__(self, nvml: Any = None, timeout: float = TOOL_TIMEOUT_SECONDS) -> None:
        self._nvml = nvml  # a pynvml-like module; None imports `pynvml` when needed
        self._timeout = timeout

    def _load_nvml(self) -> tuple[Any, str]:
        if self._nvml is not None:
            return self._nvml, ""
        try:
            return importlib.import_module("pynvml"), ""
        except ImportError:
            return None, "the NVML binding (package nvidia-ml-py) is not installed"

    def available(self) -> bool:
        nvml, _ = self._load_nvml()
        if nvml is not None:
            try:
                nvml.nvmlInit()
            except (nvml.NVMLError, OSError):
                pass  # no usable driver library; nvidia-smi may still answer, or explain why not
            else:
                nvml.nvmlShutdown()
                return True
        return tool_on_path(SMI) is not None

    def detect(self) -> list[GPUDevice]:
        nvml, why = self._load_nvml()
        if nvml is not None:
            try:
                return read_nvml(nvml)
            except nvml.NVMLError as exc:
                why = f"NVML failed: {exc}"
            except OSError as exc:
                why = f"NVML could not be loaded: {exc}"
        try:
            return self._detect_with_smi()
        except DetectionError as exc:
            raise DetectionError(f"{why}; and {exc}" if why else str(exc)) from None

    def _detect_with_smi(self) -> list[GPUDevice]:
        try:
            output = run_tool([SMI, "-q", "-x"], self._timeout)
        except DetectionError as exc:
            if NO_DEVICES in str(exc):  # exit code 6: the driver works and there is no GPU
                return []
            raise
        mig_list = ""
        if "<mig_device>" in output:
            try:
                if _needs_mig_list(ET.fromstring(output)):
                    mig_list = run_tool([SMI, "-L"], self._timeout)
            except ET.ParseError:
                pass  # parse_nvidia_smi_xml reports the unreadable XML itself
        return parse_nvidia_smi_xml(output, mig_list)
