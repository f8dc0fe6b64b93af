"""AMD GPUs through `amd-smi` (JSON), or `rocm-smi --json` where amd-smi is missing or fails."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import (
    TOOL_TIMEOUT_SECONDS,
    DetectionError,
    malformed,
    run_tool,
    tool_on_path,
)

logger = logging.getLogger(__name__)

AMD_SMI = "amd-smi"
ROCM_SMI = "rocm-smi"
AMD_SMI_LIST = [AMD_SMI, "list", "--json"]
AMD_SMI_STATIC = [AMD_SMI, "static", "--asic", "--json"]
AMD_SMI_METRIC = [AMD_SMI, "metric", "--usage", "--mem-usage", "--temperature", "--json"]
ROCM_SMI_QUERY = [
    ROCM_SMI,
    "--showproductname",
    "--showmeminfo",
    "vram",
    "--showuse",
    "--showtemp",
    "--showuniqueid",
    "--json",
]

# amd-smi's "MB" is the mebibyte (it divides bytes by 2**20: an MI300X's 192 GiB read 196592 MB after the
# driver's reserve); rocm-smi reports bytes "(B)". Either way memory is converted exactly to bytes.
_UNIT_BYTES = {"B": 1, "KB": 1024, "KIB": 1024, "MB": 1024**2, "MIB": 1024**2, "GB": 1024**3, "GIB": 1024**3}
_QUANTITY = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z%]*)\s*$")
_CARD = re.compile(r"^card(\d+)$")
# A card rocm-smi lists but that is Hygon's (DTK ships a rocm-smi too): the Hygon detector reports it.
_HYGON_KEYS = ("DCU use (%)", "HCU use (%)")
_HYGON_VENDORS = ("haiguang", "c-3000")


def load_json(tool: str, text: str) -> Any:
    """The JSON document in a tool's output, skipping warning lines some versions print before it."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = min((text.find(mark) for mark in "{[" if mark in text), default=-1)
    if start > 0:
        try:
            return json.loads(text[start:])
        except ValueError:
            pass
    raise malformed(tool, "not JSON", text)


def parse_amd_smi(list_text: str, static_text: str, metric_text: str) -> list[GPUDevice]:
    """GPUs from `amd-smi list`, `static --asic` and `metric --usage --mem-usage --temperature` (JSON).

    amd-smi before 26 (ROCm < 7) prints a list of per-GPU objects; 26 and later wrap it in "gpu_data".
    Values are {"value": 42, "unit": "%"} objects, plain numbers, or "N/A".
    """
    listed = _amd_smi_gpus("amd-smi list", list_text)
    static = _amd_smi_gpus("amd-smi static", static_text)
    metric = _amd_smi_gpus("amd-smi metric", metric_text)
    devices: list[GPUDevice] = []
    for index in sorted(listed):
        asic = static.get(index, {}).get("asic")
        readings = metric.get(index)
        if readings is None:
            raise malformed("amd-smi metric", f"no readings for GPU {index}", metric_text)
        memory = readings.get("mem_usage")
        memory = memory if isinstance(memory, dict) else {}
        total, used = quantity_bytes(memory.get("total_vram")), quantity_bytes(memory.get("used_vram"))
        if not total:
            raise malformed("amd-smi metric", f"no VRAM total for GPU {index}", metric_text)
        usage = readings.get("usage")
        temperature = readings.get("temperature")
        asic = asic if isinstance(asic, dict) else {}
        uuid = listed[index].get("uuid")
        devices.append(
            _device(
                index=index,
                name=_text(asic.get("market_name")) or "AMD GPU",
                uuid=_text(uuid),
                total=total,
                used=used or 0,
                cores=int(quantity(asic.get("num_compute_units")) or 0),
                busy=quantity(usage.get("gfx_activity")) if isinstance(usage, dict) else None,
                temperature=_first(temperature, ("edge", "hotspot", "junction", "mem")),
            )
        )
    return devices


def parse_rocm_smi(text: str) -> list[GPUDevice]:
    """AMD GPUs from `rocm-smi ... --json`: {"card0": {"Card Series": ..., "VRAM Total Memory (B)": ...}}.

    Hygon cards in the same output (a DTK's rocm-smi) are left to the Hygon detector.
    """
    payload = load_json(ROCM_SMI, text)
    if not isinstance(payload, dict):
        raise malformed(ROCM_SMI, "not a JSON object of cards", text)
    cards = {int(match[1]): fields for key, fields in payload.items() if (match := _CARD.match(key))}
    if not cards:
        raise DetectionError(f"rocm-smi listed no GPUs; it said: {text.strip()[:2000] or 'nothing'}")
    devices: list[GPUDevice] = []
    for index in sorted(cards):
        fields = cards[index]
        if not isinstance(fields, dict):
            raise malformed(ROCM_SMI, f"card{index} is not an object", text)
        if _is_hygon(fields):
            continue
        total = quantity_bytes(_field(fields, "VRAM Total Memory (B)"), default_unit="B")
        used = quantity_bytes(_field(fields, "VRAM Total Used Memory (B)"), default_unit="B")
        if not total:
            raise malformed(ROCM_SMI, f"no VRAM total for card{index}", text)
        temperatures = {
            sensor: _field(fields, f"Temperature (Sensor {sensor}) (C)")
            for sensor in ("edge", "junction", "memory", "mem")
        }
        devices.append(
            _device(
                index=index,
                name=_text(_field(fields, "Card Series", "Device Name", "Card Model")) or "AMD GPU",
                uuid=_text(_field(fields, "Unique ID")),
                total=total,
                used=used or 0,
                cores=0,  # rocm-smi does not report compute units
                busy=quantity(_field(fields, "GPU use (%)")),
                temperature=_first(temperatures, ("edge", "junction", "memory", "mem")),
            )
        )
    return devices


def quantity(value: Any) -> float | None:
    """A number from 42, "42", "42.0 %", {"value": 42, "unit": "%"}; None for "N/A" and the like."""
    if isinstance(value, dict):
        value = value.get("value")
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and (match := _QUANTITY.match(value)):
        return float(match[1])
    return None


def quantity_bytes(value: Any, default_unit: str = "MB") -> int | None:
    """Bytes from {"value": 196592, "unit": "MB"}, "196592 MB" or a bare number in `default_unit`."""
    unit = default_unit
    if isinstance(value, dict):
        unit = str(value.get("unit") or default_unit)
    elif isinstance(value, str) and (match := _QUANTITY.match(value)) and match[2]:
        unit = match[2]
    number = quantity(value)
    factor = _UNIT_BYTES.get(unit.upper())
    if number is None or factor is None:
        return None
    return int(number * factor)


class AmdDetector:
    """AMD GPUs: amd-smi where installed, rocm-smi otherwise or when amd-smi fails."""

    vendor = "AMD"

    def __init__(self, timeout: float = TOOL_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout

    def available(self) -> bool:
        return tool_on_path(AMD_SMI) is not None or tool_on_path(ROCM_SMI) is not None

    def detect(self) -> list[GPUDevice]:
        if tool_on_path(AMD_SMI) is None:
            return self._rocm_smi()
        try:
            return self._amd_smi()
        except DetectionError as error:
            if tool_on_path(ROCM_SMI) is None:
                raise
            logger.warning("amd-smi failed, asking rocm-smi instead: %s", error)
            try:
                return self._rocm_smi()
            except DetectionError as fallback:
                raise DetectionError(f"{error}; and rocm-smi: {fallback}") from None

    def _amd_smi(self) -> list[GPUDevice]:
        return parse_amd_smi(
            run_tool(AMD_SMI_LIST, self.timeout),
            run_tool(AMD_SMI_STATIC, self.timeout),
            run_tool(AMD_SMI_METRIC, self.timeout),
        )

    def _rocm_smi(self) -> list[GPUDevice]:
        return parse_rocm_smi(run_tool(ROCM_SMI_QUERY, self.timeout))


def _amd_smi_gpus(tool: str, text: str) -> dict[int, dict[str, Any]]:
    payload = load_json(tool, text)
    if isinstance(payload, dict) and "gpu_data" in payload:
        payload = payload["gpu_data"]
    if not isinstance(payload, list):
        raise malformed(tool, "not a list of GPUs", text)
    gpus: dict[int, dict[str, Any]] = {}
    for entry in payload:
        if not isinstance(entry, dict) or not isinstance(entry.get("gpu"), int):
            raise malformed(tool, "a GPU entry without a numeric 'gpu'", text)
        gpus[entry["gpu"]] = entry
    if not gpus:
        raise DetectionError(f"{tool} listed no GPUs; it said: {text.strip()[:2000] or 'nothing'}")
    return gpus


def _device(
    *,
    index: int,
    name: str,
    uuid: str,
    total: int,
    used: int,
    cores: int,
    busy: float | None,
    temperature: float | None,
) -> GPUDevice:
    return GPUDevice(
        index=index,
        name=name,
        vendor=AmdDetector.vendor,
        type=GPUType.ROCM,
        uuid=uuid,
        memory=MemoryInfo(total=total, used=used, utilization_rate=round(used / total * 100, 2)),
        core=GPUCoreInfo(total=cores, utilization_rate=busy or 0.0),
        temperature=temperature,
    )


def _field(fields: dict[str, Any], *names: str) -> Any:
    """The first of `names` present, ignoring case (rocm-smi 5 wrote "Card series", 6 "Card Series")."""
    folded = {key.strip().lower(): value for key, value in fields.items()}
    for name in names:
        value = folded.get(name.lower())
        if value not in (None, ""):
            return value
    return None


def _first(readings: Any, sensors: tuple[str, ...]) -> float | None:
    if not isinstance(readings, dict):
        return None
    for sensor in sensors:
        value = quantity(readings.get(sensor))
        if value is not None:
            return value
    return None


def _is_hygon(fields: dict[str, Any]) -> bool:
    vendor = str(_field(fields, "Card Vendor") or "").lower()
    return any(key in fields for key in _HYGON_KEYS) or any(name in vendor for name in _HYGON_VENDORS)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) and value.strip().upper() != "N/A" else ""
