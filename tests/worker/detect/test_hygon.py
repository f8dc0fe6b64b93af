"""Hygon detection on recorded `hy-smi --json` runs, answered by a fake `hy-smi` put first on PATH."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.base import DetectionError
from gpustack.worker.detect.hygon import HygonDetector, load_hy_smi_json, parse_hy_smi
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "hygon"
MiB = 1024**2
QUERY = "--showproductname --showuniqueid --showmeminfo vram --showuse --showtemp --json"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def fake_hy_smi(path: Path, text: str, code: int = 0, sleep: float = 0) -> None:
    """An `hy-smi` at `path` that answers the detector's query with the recorded text and exit code."""
    fake_tool(path.parent, path.name, {QUERY: (text, code)}, sleep)


def test_hy_smi_lists_every_dcu_with_exact_bytes(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-1.6-dtk24.04-4x-z100l.json"))
    devices = HygonDetector().detect()

    assert [(d.index, d.name, d.vendor, d.type, d.visible_id) for d in devices] == [
        (i, "Z100L", "Hygon", GPUType.DCU, "") for i in range(4)
    ]
    idle = devices[0]
    assert idle.memory.total == 32752 * MiB and idle.memory.used == 2 * MiB
    assert idle.uuid == "0xa3c1d27e4f0b9100"
    assert idle.temperature == 38 and idle.core.utilization_rate == 0


def test_a_busy_dcu_is_reported_busy(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-1.6-dtk24.04-4x-z100l.json"))
    busy = HygonDetector().detect()[2]
    assert busy.memory.used == 30211 * MiB
    assert busy.memory.utilization_rate == pytest.approx(92.24, abs=0.01)
    assert busy.core.utilization_rate == 98 and busy.temperature == 61


def test_newer_drivers_hcu_keys_are_read_like_the_dcu_ones() -> None:
    idle, busy = parse_hy_smi(fixture("hy-smi-dtk25.04-2x-k100ai.json"))
    assert (idle.name, idle.memory.total) == ("K100_AI", 65520 * MiB)
    assert busy.core.utilization_rate == 64 and busy.memory.used == 48102 * MiB
    assert idle.temperature == 35  # no edge sensor: the core temperature is read


def test_hy_smi_json_with_missing_commas_is_still_read(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-dtk25.04-2x-bw-missing-commas.txt"))
    devices = HygonDetector().detect()
    assert [(d.index, d.name, d.memory.used // MiB, d.uuid) for d in devices] == [
        (0, "BW", 64169, "0x58e1c0a7d2b34f61"),
        (1, "BW", 64104, "0x2b7d90e4c1a85f32"),
    ]
    assert devices[0].temperature == 54


def test_numbers_with_units_glued_on_are_read() -> None:
    [device] = parse_hy_smi(
        'WARNING: one DCU is in a low-power state\n{"card0": {"HCU use (%)": "7%" "vram Total Memory (B)": '
        '34359738368 "vram Total Used Memory (B)": 6870269952 "Temperature (Sensor edge) (C)": 41.0C}}'
    )
    assert device.memory.total == 34359738368 and device.memory.used == 6870269952
    assert device.core.utilization_rate == 7 and device.temperature == 41
    assert device.name == "Hygon DCU"


def test_a_driver_message_instead_of_json_reaches_the_user(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-driver-not-loaded.txt"))
    with pytest.raises(DetectionError, match="hydcu not found in modules"):
        HygonDetector().detect()


def test_a_failing_hy_smi_is_quoted_verbatim(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-driver-not-loaded.txt"), code=1)
    with pytest.raises(DetectionError, match=r"failed \(exit code 1\): ERROR:root:Driver not initialized"):
        HygonDetector().detect()


def test_a_hung_hy_smi_is_a_detection_error(tools: Path) -> None:
    fake_hy_smi(tools / "hy-smi", fixture("hy-smi-1.6-dtk24.04-4x-z100l.json"), sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        HygonDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


def test_truncated_json_is_a_detection_error_naming_hy_smi(tools: Path) -> None:
    text = fixture("hy-smi-1.6-dtk24.04-4x-z100l.json")
    fake_hy_smi(tools / "hy-smi", text[: len(text) // 2])
    with pytest.raises(DetectionError, match="^hy-smi gave output that could not be read"):
        HygonDetector().detect()


@pytest.mark.parametrize(
    "output",
    ["", "[1, 2]", '{"system": {"Driver version": "6.3.8"}}', '{"card0": {"DCU use (%)": "0.0"}}'],
    ids=["empty", "not-an-object", "no-cards", "no-vram"],
)
def test_output_without_dcus_is_a_detection_error_not_an_empty_list(output: str) -> None:
    with pytest.raises(DetectionError, match="hy-smi"):
        parse_hy_smi(output)


def test_valid_json_is_read_strictly_first() -> None:
    assert load_hy_smi_json('{"card0": {"": ""}}') == {"card0": {"": ""}}


def test_hy_smi_is_found_where_the_driver_installs_it_when_not_on_path(tools: Path, tmp_path: Path) -> None:
    installed = tmp_path / "opt" / "hy-smi"
    installed.parent.mkdir()
    assert not HygonDetector(installed_at=(str(installed),)).available()

    fake_hy_smi(installed, fixture("hy-smi-dtk25.04-2x-k100ai.json"))
    detector = HygonDetector(installed_at=(str(installed),))
    assert detector.available()
    assert len(detector.detect()) == 2
