"""Hygon DCUs through `hy-smi --json`, a rocm-smi derivative whose JSON is not always valid JSON."""

from __future__ import annotations

import json
import os
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

TOOL = "hy-smi"
# Where the hyhal driver installs it when its bin directory is not on PATH.
INSTALLED_AT = ("/opt/hyhal/bin/hy-smi",)
QUERY = ["--showproductname", "--showuniqueid", "--showmeminfo", "vram", "--showuse", "--showtemp", "--json"]

_CARD = re.compile(r"^card(\d+)$")
# The memory unit is part of the key: "vram Total Memory (MiB)" in DTK 24.04 and later, "(B)" in some older.
_TOTAL = re.compile(r"^vram total memory \((\w+)\)$", re.IGNORECASE)
_USED = re.compile(r"^vram total used memory \((\w+)\)$", re.IGNORECASE)
_BUSY = ("HCU use (%)", "DCU use (%)", "GPU use (%)")  # HCU since DTK 25.04, DCU before
_TEMPERATURES = tuple(f"Temperature (Sensor {s}) (C)" for s in ("edge", "core", "junction", "mem"))
_UNIT_BYTES = {"B": 1, "KIB": 1024, "KB": 1024, "MIB": 1024**2, "MB": 1024**2, "GIB": 1024**3, "GB": 1024**3}
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],:]|[^\s{}\[\],:"]+')
_LITERAL = re.compile(r"^(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)$")


def load_hy_smi_json(text: str) -> dict[str, Any]:
    """hy-smi's JSON object, tolerating what real versions print.

    Seen in the field: warning lines before the object, commas missing between fields
    (`"91.0""Average GFX Core Power (W)": ...`), and numbers with a unit glued on (`41.0C`).
    """
    start = text.find("{")
    if start < 0:
        raise malformed(TOOL, "no JSON object", text)
    body = text[start:]
    try:
        payload = json.loads(body)
    except ValueError:
        try:
            payload = json.loads(_repaired(body))
        except ValueError:
            raise malformed(TOOL, "not JSON, even allowing for missing commas", text) from None
    if not isinstance(payload, dict):
        raise malformed(TOOL, "not a JSON object of cards", text)
    return payload


def parse_hy_smi(text: str) -> list[GPUDevice]:
    """DCUs from `hy-smi ... --json`: {"card0": {"Card Series": "K100_AI", "HCU use (%)": "0.0", ...}}."""
    payload = load_hy_smi_json(text)
    cards = {int(match[1]): fields for key, fields in payload.items() if (match := _CARD.match(key))}
    if not cards:
        raise DetectionError(f"hy-smi listed no DCUs; it said: {text.strip()[:2000] or 'nothing'}")
    devices: list[GPUDevice] = []
    for index in sorted(cards):
        fields = cards[index]
        if not isinstance(fields, dict):
            raise malformed(TOOL, f"card{index} is not an object", text)
        total, used = _memory(fields, _TOTAL), _memory(fields, _USED)
        if not total:
            raise malformed(TOOL, f"no vram total for card{index}", text)
        used = used or 0
        devices.append(
            GPUDevice(
                index=index,
                name=_text(fields, "Card Series", "Card series", "Card Model", "Card model") or "Hygon DCU",
                vendor=HygonDetector.vendor,
                type=GPUType.DCU,
                uuid=_text(fields, "Unique ID", "Serial Number"),
                memory=MemoryInfo(total=total, used=used, utilization_rate=round(used / total * 100, 2)),
                core=GPUCoreInfo(utilization_rate=_number(fields, *_BUSY) or 0.0),
                temperature=_number(fields, *_TEMPERATURES),
            )
        )
    return devices


class HygonDetector:
    """Hygon DCUs: one `hy-smi --json` query."""

    vendor = "Hygon"

    def __init__(
        self, timeout: float = TOOL_TIMEOUT_SECONDS, installed_at: tuple[str, ...] = INSTALLED_AT
    ) -> None:
        self.timeout = timeout
        self.installed_at = installed_at

    def available(self) -> bool:
        return self._tool() is not None

    def detect(self) -> list[GPUDevice]:
        return parse_hy_smi(run_tool([self._tool() or TOOL, *QUERY], self.timeout))

    def _tool(self) -> str | None:
        if tool_on_path(TOOL):
            return TOOL
        return next((path for path in self.installed_at if os.access(path, os.X_OK)), None)


def _repaired(body: str) -> str:
    """Insert the commas hy-smi leaves out between fields and quote numbers that carry a unit."""
    out: list[str] = []
    previous = ","
    for match in _TOKEN.finditer(body):
        token = match[0]
        # A value ended (string, literal, } or ]) and another value or key begins: a comma is missing.
        if previous[0] not in "{[,:" and token[0] not in "}],:":
            out.append(",")
        if token[0] not in '"{}[],:' and not _LITERAL.match(token):
            token = json.dumps(token)
        out.append(token)
        previous = token
    return "".join(out)


def _memory(fields: dict[str, Any], key: re.Pattern[str]) -> int | None:
    for name, value in fields.items():
        match = key.match(name.strip())
        if match is None:
            continue
        factor = _UNIT_BYTES.get(match[1].upper())
        number = _leading_number(value)
        if factor is None or number is None:
            return None
        return int(number * factor)
    return None


def _number(fields: dict[str, Any], *names: str) -> float | None:
    for name in names:
        number = _leading_number(fields.get(name))
        if number is not None:
            return number
    return None


def _leading_number(value: Any) -> float | None:
    """41.0 from 41.0, "41.0", "41.0C" or "7%"; None for "N/A"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and (match := _NUMBER.match(value)):
        return float(match[1])
    return None


def _text(fields: dict[str, Any], *names: str) -> str:
    for name in names:
        value = fields.get(name)
        if isinstance(value, str) and value.strip() and value.strip().upper() != "N/A":
            return value.strip()
    return ""
