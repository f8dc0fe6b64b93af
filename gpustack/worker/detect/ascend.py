"""Huawei Ascend NPUs through `npu-smi`: the overview table, the chip to logical-id map, per-card details."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gpustack.schemas.workers import GPUCoreInfo, GPUDevice, GPUType, MemoryInfo
from gpustack.worker.detect.base import (
    TOOL_TIMEOUT_SECONDS,
    DetectionError,
    malformed,
    run_tool,
    tool_on_path,
)

logger = logging.getLogger(__name__)

TOOL = "npu-smi"
# npu-smi's "MB" is the mebibyte: a 64 GiB 910B reports 65536 MB of HBM.
MIB = 1024 * 1024
# How much of a tool's answer an error quotes, verbatim: enough for any driver message, bounded for logs.
_QUOTE_LIMIT = 4000

_BUS_ID = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f]$")
_USED_TOTAL = re.compile(r"(\d+)\s*/\s*(\d+)")
# The columns `npu-smi info -m` has printed across versions; newer ones add Chip Phy-ID (A3) or Slot ID.
_MAP_COLUMNS = ("NPU ID", "Slot ID", "Chip ID", "Chip Logic ID", "Chip Phy-ID", "Chip Name")


@dataclass(frozen=True)
class NpuChip:
    """One chip of the `npu-smi info` table, with what its card's row says."""

    npu_id: int
    chip_id: int
    name: str
    health: str
    temperature: float | None
    aicore_percent: float | None
    memory_used_mib: int
    memory_total_mib: int
    bus_id: str


@dataclass(frozen=True)
class ChipIdentity:
    """A compute chip in `npu-smi info -m`: the logical id ASCEND_RT_VISIBLE_DEVICES takes, and its name."""

    logic_id: int
    name: str


def parse_npu_smi_info(text: str) -> list[NpuChip]:
    """The chips of the `npu-smi info` table, in table order.

    910B prints one chip row per card (`Chip` column, HBM-Usage); 310P prints a `Chip Device` column and,
    on a 300I Duo, one card row per chip with the card's NPU id repeated; A3 prints `Chip Phy-ID`. Memory
    is HBM where the table has an HBM column, else the chip's DDR (Memory-Usage). The process table that
    follows is not read.
    """
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if _is_table_header(line)), None)
    if header is None:
        # Not a table at all: the driver's own words, e.g. "dcmi model initialized failed, because the
        # device is used. ret is -8020" when another container holds the NPUs.
        raise DetectionError(f"`npu-smi info` printed no NPU table; it said: {_verbatim(text)}")
    if header + 1 >= len(lines) or not lines[header + 1].strip().startswith("| Chip"):
        raise malformed(TOOL, "the table header has no Chip line", text)
    with_hbm = "HBM-Usage" in lines[header + 1]

    chips: list[NpuChip] = []
    card: tuple[int, str, str, float | None] | None = None
    card_chips = 0
    row_open = False
    for line in lines[header + 2 :]:
        row = line.strip()
        if not row:
            continue
        if "Process id" in row or "Process name" in row:
            break
        if row.startswith("+"):
            row_open = False
            continue
        if not row.startswith("|") or not row.endswith("|") or row.count("|") < 4:
            raise malformed(TOOL, f"a cut-off table row {row[:80]!r}", text)
        cells = [cell.strip() for cell in row[1:-1].split("|")]
        row_open = True
        if _BUS_ID.match(cells[1]):
            if card is None:
                raise malformed(TOOL, "a chip row before any NPU row", text)
            chips.append(_chip_row(card, cells, with_hbm, text))
            card_chips += 1
            continue
        if card is not None and card_chips == 0:
            raise malformed(TOOL, f"NPU {card[0]} has no chip row", text)
        card, card_chips = _card_row(cells, text), 0
    if row_open or (card is not None and card_chips == 0):
        raise malformed(TOOL, "the table ends in the middle of a card", text)
    if not chips:
        raise DetectionError(f"`npu-smi info` listed no NPU chips; it said: {_verbatim(text)}")
    return chips


def parse_npu_smi_mapping(text: str) -> dict[tuple[int, int], ChipIdentity]:
    """`npu-smi info -m`: (NPU id, chip id) to the chip's logical id and name.

    Rows whose Chip Logic ID is "-" are the cards' MCUs, which are not compute devices.
    """
    lines = text.splitlines()
    header_at = next((i for i, line in enumerate(lines) if "NPU ID" in line and "Chip ID" in line), None)
    if header_at is None:
        raise malformed(f"{TOOL} info -m", "no NPU ID / Chip ID header", text)
    header = lines[header_at]
    columns = [
        name for _, name in sorted((header.find(name), name) for name in _MAP_COLUMNS if name in header)
    ]
    if "Chip Logic ID" not in columns:
        raise malformed(f"{TOOL} info -m", "no Chip Logic ID column", text)
    # Every column is one word wide except the chip name ("Ascend 910B3"), which is last.
    single = columns[:-1] if columns[-1] == "Chip Name" else columns

    mapping: dict[tuple[int, int], ChipIdentity] = {}
    for line in lines[header_at + 1 :]:
        words = line.split()
        if not words:
            continue
        if len(words) < len(single):
            raise malformed(f"{TOOL} info -m", f"a short row {line.strip()!r}", text)
        values = dict(zip(single, words[: len(single)], strict=True))
        try:
            key = (int(values["NPU ID"]), int(values["Chip ID"]))
        except ValueError:
            raise malformed(f"{TOOL} info -m", f"a row without numeric ids {line.strip()!r}", text) from None
        if values["Chip Logic ID"].isdigit():
            mapping[key] = ChipIdentity(int(values["Chip Logic ID"]), " ".join(words[len(single) :]))
    if not mapping:
        raise malformed(f"{TOOL} info -m", "no chip with a logical id", text)
    return mapping


def parse_aicore_counts(text: str) -> dict[int, int]:
    """`npu-smi info -t common -i <card>`: chip id to AI Core count (910B prints it; 310P does not)."""
    counts: dict[int, int] = {}
    chip: int | None = None
    for key, value in _key_values(text):
        if key == "Chip ID":
            chip = int(value) if value.isdigit() else None
        elif key == "Chip Name":
            chip = None  # the card's MCU block, which closes the listing
        elif key == "Aicore Count" and chip is not None and value.isdigit():
            counts[chip] = int(value)
    return counts


def parse_die_id(text: str) -> str:
    """`npu-smi info -t board -i <card> -c <chip>`: the chip's die id (VDie ID on 910B, Die ID on 310P)."""
    found = dict(_key_values(text))
    die = found.get("VDie ID") or found.get("Die ID") or ""
    return "-".join(die.split())


def ascend_devices(
    chips: list[NpuChip],
    identities: dict[tuple[int, int], ChipIdentity],
    aicore_counts: dict[tuple[int, int], int],
    die_ids: dict[tuple[int, int], str],
) -> list[GPUDevice]:
    """One device per chip, indexed by its logical id: the number ASCEND_RT_VISIBLE_DEVICES takes.

    The NPU id is a card (a 300I Duo card holds two chips) and, in a container, the host's numbering;
    the logical id is what the runtime counts, so index and visible id agree and visible_id stays empty.
    """
    devices: list[GPUDevice] = []
    for chip in chips:
        key = (chip.npu_id, chip.chip_id)
        identity = identities.get(key)
        if identity is None:
            raise DetectionError(
                f"npu-smi info -m gives no logical id for NPU {chip.npu_id} chip {chip.chip_id}, "
                "which `npu-smi info` lists"
            )
        name = identity.name if identity.name.startswith("Ascend") else f"Ascend {chip.name}"
        total, used = chip.memory_total_mib * MIB, chip.memory_used_mib * MIB
        devices.append(
            GPUDevice(
                index=identity.logic_id,
                name=name,
                vendor=AscendDetector.vendor,
                type=GPUType.NPU,
                uuid=die_ids.get(key, ""),
                memory=MemoryInfo(
                    total=total, used=used, utilization_rate=round(used / total * 100, 2) if total else 0.0
                ),
                core=GPUCoreInfo(
                    total=aicore_counts.get(key, 0), utilization_rate=chip.aicore_percent or 0.0
                ),
                temperature=chip.temperature,
            )
        )
    devices.sort(key=lambda device: device.index)
    indexes = [device.index for device in devices]
    if len(set(indexes)) != len(indexes):
        raise DetectionError(f"npu-smi info -m gives two chips the same logical id: {indexes}")
    return devices


class AscendDetector:
    """Ascend NPUs: `npu-smi info` and `npu-smi info -m` must answer; per-card details are best effort."""

    vendor = "Huawei"

    def __init__(self, timeout: float = TOOL_TIMEOUT_SECONDS) -> None:
        self.timeout = timeout

    def available(self) -> bool:
        return tool_on_path(TOOL) is not None

    def detect(self) -> list[GPUDevice]:
        chips = parse_npu_smi_info(self._run("info"))
        identities = parse_npu_smi_mapping(self._run("info", "-m"))
        aicore_counts, die_ids = self._details(chips)
        return ascend_devices(chips, identities, aicore_counts, die_ids)

    def _run(self, *args: str) -> str:
        return run_tool([TOOL, *args], self.timeout)

    def _details(self, chips: list[NpuChip]) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], str]]:
        """AI Core counts and die ids, asked card by card in parallel (npu-smi takes ~1 s per call).

        A card that does not answer (a vNPU, an older driver) is reported without them, with a warning:
        the table and the id map already say everything scheduling needs.
        """
        cards = sorted({chip.npu_id for chip in chips})
        with ThreadPoolExecutor(max_workers=8) as pool:
            common = {
                card: pool.submit(self._optional, "info", "-t", "common", "-i", str(card)) for card in cards
            }
            boards = {
                (chip.npu_id, chip.chip_id): pool.submit(
                    self._optional, "info", "-t", "board", "-i", str(chip.npu_id), "-c", str(chip.chip_id)
                )
                for chip in chips
            }
            aicore_counts: dict[tuple[int, int], int] = {}
            for card, future in common.items():
                for chip_id, count in parse_aicore_counts(future.result()).items():
                    aicore_counts[(card, chip_id)] = count
            die_ids = {key: parse_die_id(future.result()) for key, future in boards.items()}
        return aicore_counts, die_ids

    def _optional(self, *args: str) -> str:
        try:
            return self._run(*args)
        except DetectionError as error:
            logger.warning("Ascend NPU details left out: %s", error)
            return ""


def _is_table_header(line: str) -> bool:
    row = line.strip()
    return row.startswith("|") and "NPU" in row and "Name" in row and "Health" in row


def _card_row(cells: list[str], text: str) -> tuple[int, str, str, float | None]:
    """NPU id, chip name, health and temperature from `| 4     910B3  | OK  | 102.8  45  0 / 0 |`."""
    words = cells[0].split()
    if len(words) < 2 or not words[0].isdigit():
        raise malformed(TOOL, f"an NPU row without id and name {cells[0]!r}", text)
    readings = cells[2].split()
    temperature = _float(readings[1]) if len(readings) > 1 else None
    return int(words[0]), " ".join(words[1:]), cells[1], temperature


def _chip_row(
    card: tuple[int, str, str, float | None], cells: list[str], with_hbm: bool, text: str
) -> NpuChip:
    """A chip from `| 0  0 | 0000:C1:00.0 | 12  0 / 0  60156/ 65536 |` (AICore %, memory, HBM)."""
    words = cells[0].split()
    if not words or not words[0].isdigit():
        raise malformed(TOOL, f"a chip row without chip id {cells[0]!r}", text)
    pairs = _USED_TOTAL.findall(cells[2])
    wanted = 2 if with_hbm else 1
    if len(pairs) < wanted:
        raise malformed(TOOL, f"no memory reading in {cells[2]!r}", text)
    used, total = pairs[wanted - 1]
    readings = cells[2].split()
    npu_id, name, health, temperature = card
    return NpuChip(
        npu_id=npu_id,
        chip_id=int(words[0]),
        name=name,
        health=health,
        temperature=temperature,
        aicore_percent=_float(readings[0]) if readings else None,
        memory_used_mib=int(used),
        memory_total_mib=int(total),
        bus_id=cells[1],
    )


def _key_values(text: str) -> Iterator[tuple[str, str]]:
    """`Key      : value` lines, as npu-smi's `-t` queries print them."""
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon:
            yield key.strip(), value.strip()


def _float(word: str) -> float | None:
    try:
        return float(word)
    except ValueError:
        return None  # "NA" or "-": the card does not report it


def _verbatim(text: str) -> str:
    said = text.strip()
    return said[:_QUOTE_LIMIT] if said else "nothing"
