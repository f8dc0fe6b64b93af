"""Cambricon MLUs through `cnmon info -j`, which writes cnmon_info.json into its working directory."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import (
    TOOL_TIMEOUT_SECONDS,
    DetectionError,
    malformed,
    run_tool,
    tool_on_path,
)

TOOL = "cnmon"
# -e temperatures, -m memory, -u utilization, -j: also save everything as JSON. cnmon prints its usual
# text on stdout and writes the JSON to ./cnmon_info.json; there is no option to print it instead.
QUERY = [TOOL, "info", "-e", "-m", "-u", "-j"]
REPORT = "cnmon_info.json"
# cnmon reports memory in MiB.
MIB = 1024 * 1024

# Runs the query in a private directory: `sh` changes into it and replaces itself with cnmon, so a
# timeout kills cnmon itself and the report cannot collide with another run or land in the worker's cwd.
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")


def parse_cnmon_json(text: str) -> list[GPUDevice]:
    """MLUs from cnmon_info.json: {"CnmonInfo": [{"CardNum": 0, "ProductName": "MLU370-X8", ...}]}.

    PhysicalMemUsage Total/Used are MiB, Utilization.MLUAverage percent, Temperature.Chip degrees C;
    values may be numbers or strings such as "24576" or "N/A".
    """
    try:
        payload = json.loads(text)
    except ValueError:
        raise malformed(REPORT, "not JSON", text) from None
    cards = payload.get("CnmonInfo") if isinstance(payload, dict) else None
    if not isinstance(cards, list):
        raise malformed(REPORT, "no CnmonInfo list", text)
    if not cards:
        raise DetectionError(f"cnmon listed no MLUs; {REPORT} was: {text.strip()[:2000]}")
    devices: list[GPUDevice] = []
    for card in cards:
        if not isinstance(card, dict):
            raise malformed(REPORT, "a CnmonInfo entry is not an object", text)
        index = _number(card.get("CardNum"))
        if index is None:
            raise malformed(REPORT, "a card without CardNum", text)
        memory = _section(card, "PhysicalMemUsage")
        total, used = _number(memory.get("Total")), _number(memory.get("Used")) or 0.0
        if not total:
            raise malformed(REPORT, f"no PhysicalMemUsage.Total for card {int(index)}", text)
        name = card.get("ProductName")
        devices.append(
            GPUDevice(
                index=int(index),
                name=name.strip() if isinstance(name, str) and name.strip() else "Cambricon MLU",
                vendor=CambriconDetector.vendor,
                type=GPUType.MLU,
                uuid=str(card.get("UUID") or "").strip(),
                memory=MemoryInfo(
                    total=int(total * MIB),
                    used=int(used * MIB),
                    utilization_rate=round(used / total * 100, 2),
                ),
                core=GPUCoreInfo(
                    utilization_rate=_number(_section(card, "Utilization").get("MLUAverage")) or 0.0
                ),
                temperature=_number(_section(card, "Temperature").get("Chip")),
            )
        )
    devices.sort(key=lambda device: device.index)
    return devices


class CambriconDetector:
    """Cambricon MLUs: one `cnmon info -e -m -u -j` run in a temporary directory."""

    vendor = "Cambricon"

    def __init__(self, timeout: float = TOOL_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout

    def available(self) -> bool:
        return tool_on_path(TOOL) is not None

    def detect(self) -> list[GPUDevice]:
        with tempfile.TemporaryDirectory(prefix="gpustack-cnmon-") as directory:
            said = self._run_in(directory)
            report = Path(directory, REPORT)
            if not report.is_file():
                raise DetectionError(
                    f"`{' '.join(QUERY)}` wrote no {REPORT}; it said: {said.strip()[:2000] or 'nothing'}"
                )
            return parse_cnmon_json(report.read_text(errors="replace"))

    def _run_in(self, directory: str) -> str:
        return run_tool(list(QUERY), self.timeout, cwd=directory)


def _section(card: dict[str, Any], name: str) -> dict[str, Any]:
    section = card.get(name)
    return section if isinstance(section, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (match := _NUMBER.match(value)):
        return float(match[1])
    return None
