"""Iluvatar CoreX GPUs through `ixsmi`, whose query mode imitates `nvidia-smi --query-gpu`."""

from __future__ import annotations

import csv
import os
import re

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import (
    TOOL_TIMEOUT_SECONDS,
    DetectionError,
    malformed,
    run_tool,
    tool_on_path,
)

VENDOR = "Iluvatar"
TOOL = "ixsmi"
# Where the CoreX driver installs ixsmi; a service's PATH often lacks it.
COREX_IXSMI = "/usr/local/corex/bin/ixsmi"
FIELDS = ("index", "name", "uuid", "memory.total", "memory.used", "utilization.gpu", "temperature.gpu")
MiB = 1024**2
NO_DEVICES = "No devices were found"
# `nounits` asks for bare numbers; older ixsmi builds still append units ("16384 MiB", "0 %", "30 C").
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)\s*(MiB|%|C)?$")


def query_argv(executable: str = TOOL) -> list[str]:
    return [executable, f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits"]


def _number(text: str) -> float | None:
    match = _QUANTITY.match(text)
    return float(match.group(1)) if match else None


def parse_ixsmi_csv(output: str) -> list[GPUDevice]:
    """One device per line of `ixsmi --query-gpu=<FIELDS> --format=csv,noheader,nounits`.

    Utilization and temperature may be "N/A" (0 % and unknown); index, name and memory may not.
    """
    rows = [row for row in csv.reader(output.splitlines(), skipinitialspace=True) if row]
    if not rows:
        raise malformed(TOOL, "no GPU listed", output)
    devices = []
    for row in rows:
        fields = [field.strip() for field in row]
        if len(fields) != len(FIELDS):
            raise malformed(TOOL, f"{len(fields)} fields where {len(FIELDS)} were asked for", output)
        index, name, uuid, total, used, utilization, temperature = fields
        total_mib, used_mib = _number(total), _number(used)
        if not index.isdigit() or not name or total_mib is None or used_mib is None:
            raise malformed(TOOL, f"GPU line {','.join(fields)!r}", output)
        total_bytes, used_bytes = int(total_mib) * MiB, int(used_mib) * MiB
        devices.append(
            GPUDevice(
                index=int(index),
                name=name,
                vendor=VENDOR,
                type=GPUType.COREX,
                uuid=uuid if uuid not in ("N/A", "[N/A]") else "",
                memory=MemoryInfo(
                    total=total_bytes,
                    used=used_bytes,
                    utilization_rate=round(used_bytes / total_bytes * 100, 2) if total_bytes else 0.0,
                ),
                core=GPUCoreInfo(total=0, utilization_rate=_number(utilization) or 0.0),  # no core count
                temperature=_number(temperature),
            )
        )
    return devices


class IluvatarDetector:
    vendor = VENDOR

    def __init__(self, timeout: float = TOOL_TIMEOUT_SECONDS, corex_ixsmi: str = COREX_IXSMI) -> None:
        self._timeout = timeout
        self._corex_ixsmi = corex_ixsmi

    def _executable(self) -> str | None:
        if tool_on_path(TOOL):
            return TOOL
        return self._corex_ixsmi if os.access(self._corex_ixsmi, os.X_OK) else None

    def available(self) -> bool:
        return self._executable() is not None

    def detect(self) -> list[GPUDevice]:
        try:
            output = run_tool(query_argv(self._executable() or TOOL), self._timeout)
        except DetectionError as exc:
            if NO_DEVICES in str(exc):  # the nvidia-smi convention: the driver works, there is no GPU
                return []
            raise
        if output.strip() == NO_DEVICES:
            return []
        return parse_ixsmi_csv(output)
