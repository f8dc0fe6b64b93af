"""Moore Threads GPUs through `mthreads-gmi -q`, an indented "Key : Value" report like `nvidia-smi -q`."""

from __future__ import annotations

import re

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import TOOL_TIMEOUT_SECONDS, malformed, run_tool, tool_on_path

VENDOR = "Moore Threads"
TOOL = "mthreads-gmi"
MiB = 1024**2
GiB = 1024**3
# The key ends at the first colon followed by a space or the line's end, so that a section header such
# as "GPU 00000000:2a:00.0" (a PCI bus id) is not split into a key and a value.
_KEY_VALUE = re.compile(r"^(.*?)\s*:(?=\s|$)\s*(.*)$")
_GPU_HEADER = re.compile(r"^GPU(\s+[0-9A-Fa-f].*)?$")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB|GiB|%|C)?$")


def _sections(output: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """The report's top-level values and one {"FB Memory Usage/Total": "49152MiB", ...} per GPU block."""
    top: dict[str, str] = {}
    gpus: list[dict[str, str]] = []
    open_sections: list[tuple[int, str]] = []  # (indentation, title) of the sections around a line
    for raw in output.splitlines():
        line = raw.expandtabs(4).rstrip()
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(text)
        match = _KEY_VALUE.match(text)
        key, value = (match.group(1), match.group(2)) if match else (text, "")
        while open_sections and open_sections[-1][0] >= indent:
            open_sections.pop()
        if indent == 0 and _GPU_HEADER.match(key):
            gpus.append({})
            open_sections = []
        elif not value:
            open_sections.append((indent, key))
        else:
            path = "/".join([title for _, title in open_sections] + [key])
            (gpus[-1] if gpus else top)[path] = value
    return top, gpus


def _number(text: str) -> tuple[float, str] | None:
    match = _QUANTITY.match(text.strip())
    return (float(match.group(1)), match.group(2) or "") if match else None


def _bytes(text: str) -> int | None:
    quantity = _number(text)
    if quantity is None:
        return None
    value, unit = quantity
    return int(value * (GiB if unit == "GiB" else MiB))  # the report's memory unit is MiB


def parse_mthreads_gmi_query(output: str) -> list[GPUDevice]:
    """`mthreads-gmi -q`: one device per GPU block; name and memory are required, utilization ("N/A":
    0 %) and temperature ("N/A": unknown) are not. Core counts are 0: the report does not give them."""
    top, gpus = _sections(output)
    if not gpus:
        if top.get("Attached GPUs") == "0":
            return []
        raise malformed(TOOL, "no GPU section", output)
    attached = top.get("Attached GPUs", "")
    if attached.isdigit() and int(attached) != len(gpus):  # the report was cut short
        raise malformed(TOOL, f"{attached} GPUs attached but {len(gpus)} described", output)
    devices = []
    for ordinal, gpu in enumerate(gpus):
        name = gpu.get("Product Name", "")
        total = _bytes(gpu.get("FB Memory Usage/Total", ""))
        used = _bytes(gpu.get("FB Memory Usage/Used", ""))
        index = gpu.get("Index", str(ordinal))
        if not name or total is None or used is None or not index.isdigit():
            raise malformed(TOOL, f"GPU {ordinal} lacks its Index, Product Name or FB Memory Usage", output)
        utilization = _number(gpu.get("Utilization/Gpu", ""))
        temperature = _number(gpu.get("Temperature/GPU Current Temp", ""))
        devices.append(
            GPUDevice(
                index=int(index),
                name=name,
                vendor=VENDOR,
                type=GPUType.MUSA,
                uuid=gpu.get("GPU UUID", ""),
                memory=MemoryInfo(
                    total=total,
                    used=used,
                    utilization_rate=round(used / total * 100, 2) if total else 0.0,
                ),
                core=GPUCoreInfo(total=0, utilization_rate=utilization[0] if utilization else 0.0),
                temperature=temperature[0] if temperature else None,
            )
        )
    return devices


class MthreadsDetector:
    vendor = VENDOR

    def __init__(self, timeout: float = TOOL_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout

    def available(self) -> bool:
        return tool_on_path(TOOL) is not None

    def detect(self) -> list[GPUDevice]:
        return parse_mthreads_gmi_query(run_tool([TOOL, "-q"], self._timeout))
