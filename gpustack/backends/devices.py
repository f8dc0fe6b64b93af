"""Which devices an engine sees: each vendor's variable, set to the placement's devices only."""

from __future__ import annotations

from gpustack.backends.base import Devices

# Each vendor's variable that limits which devices a process sees.
VISIBLE_DEVICES_VARIABLES: dict[str, tuple[str, ...]] = {
    "cuda": ("CUDA_VISIBLE_DEVICES",),
    "rocm": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"),
    "dcu": ("HIP_VISIBLE_DEVICES",),
    "npu": ("ASCEND_RT_VISIBLE_DEVICES",),
    "musa": ("MUSA_VISIBLE_DEVICES",),
    "corex": ("CUDA_VISIBLE_DEVICES",),
    "mlu": ("MLU_VISIBLE_DEVICES",),
}


def visible_devices_env(gpu_type: str | None, device_ids: list[str] | tuple[str, ...]) -> dict[str, str]:
    """Variables that show the engine only its assigned devices; on a CPU placement, none at all.

    `device_ids` are what the vendor's variable takes: indexes, or MIG UUIDs.
    """
    if gpu_type is None or not device_ids:
        return {name: "" for names in VISIBLE_DEVICES_VARIABLES.values() for name in names}
    value = ",".join(device_ids)
    return {name: value for name in VISIBLE_DEVICES_VARIABLES.get(gpu_type, ())}


def visible_env(devices: Devices) -> dict[str, str]:
    return visible_devices_env(devices.gpu_type, devices.visible_ids)
