"""AMD detection on recorded `amd-smi` and `rocm-smi` runs, answered by fake tools put first on PATH."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.amd import (
    AmdDetector,
    parse_amd_smi,
    parse_rocm_smi,
    quantity,
    quantity_bytes,
)
from gpustack.worker.detect.base import DetectionError
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "amd"
MiB = 1024**2
LIST, STATIC, METRIC = (
    "list --json",
    "static --asic --json",
    "metric --usage --mem-usage --temperature --json",
)
ROCM_QUERY = "--showproductname --showmeminfo vram --showuse --showtemp --showuniqueid --json"
NO_DRIVER = "Unable to detect any GPU devices, check amdgpu version and module status (sudo modprobe amdgpu)"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def amd_smi_run(version: str, machine: str) -> dict[str, tuple[str, int]]:
    return {
        LIST: (fixture(f"amd-smi-{version}-list-{machine}.json"), 0),
        STATIC: (fixture(f"amd-smi-{version}-static-asic-{machine}.json"), 0),
        METRIC: (fixture(f"amd-smi-{version}-metric-{machine}.json"), 0),
    }


# --- amd-smi ------------------------------------------------------------------------------------------


def test_amd_smi_lists_every_mi300x_with_exact_bytes_and_compute_units(tools: Path) -> None:
    fake_tool(tools, "amd-smi", amd_smi_run("24.6", "4x-mi300x"))
    devices = AmdDetector().detect()

    assert [(d.index, d.name, d.vendor, d.type, d.visible_id) for d in devices] == [
        (i, "AMD Instinct MI300X", "AMD", GPUType.ROCM, "") for i in range(4)
    ]
    idle = devices[0]
    assert idle.memory.total == 196592 * MiB and idle.memory.used == 283 * MiB
    assert idle.core.total == 304 and idle.core.utilization_rate == 0
    assert idle.uuid == "8aff74a1-0000-1000-807c-1e4e1f8c1b2e"
    assert idle.temperature == 41  # MI300X has no edge sensor: the hotspot is read


def test_a_busy_gpu_is_reported_busy(tools: Path) -> None:
    fake_tool(tools, "amd-smi", amd_smi_run("24.6", "4x-mi300x"))
    busy = AmdDetector().detect()[2]
    assert busy.memory.used == 187904 * MiB
    assert busy.memory.utilization_rate == pytest.approx(95.58, abs=0.01)
    assert busy.core.utilization_rate == 100
    assert busy.temperature == 67


def test_amd_smi_26_output_wrapped_in_gpu_data_is_read_the_same_way(tools: Path) -> None:
    fake_tool(tools, "amd-smi", amd_smi_run("26.0", "2x-rx7900xtx"))
    devices = AmdDetector().detect()

    assert [(d.index, d.name, d.memory.total // MiB, d.memory.used // MiB) for d in devices] == [
        (0, "AMD Radeon RX 7900 XTX", 24560, 26),
        (1, "AMD Radeon RX 7900 XTX", 24560, 21504),
    ]
    assert [(d.core.total, d.core.utilization_rate, d.temperature) for d in devices] == [
        (96, 3, 38),
        (96, 88, 71),
    ]


def test_amd_smis_own_error_reaches_the_user(tools: Path) -> None:
    fake_tool(tools, "amd-smi", {LIST: (fixture("amd-smi-no-driver.txt"), 1)})
    with pytest.raises(DetectionError, match=r"`amd-smi list --json` failed \(exit code 1\)") as caught:
        AmdDetector().detect()
    assert NO_DRIVER in str(caught.value)


def test_a_failing_amd_smi_falls_back_to_rocm_smi_with_a_warning(
    tools: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_tool(tools, "amd-smi", {LIST: (fixture("amd-smi-no-driver.txt"), 1)})
    fake_tool(tools, "rocm-smi", {ROCM_QUERY: (fixture("rocm-smi-6.1-2x-rx7900xt.json"), 0)})
    with caplog.at_level(logging.WARNING, logger="gpustack.worker.detect.amd"):
        devices = AmdDetector().detect()
    assert [d.name for d in devices] == ["Radeon RX 7900 XT", "Radeon RX 7900 XT"]
    assert NO_DRIVER in caplog.text


def test_when_both_tools_fail_the_error_quotes_both(tools: Path) -> None:
    fake_tool(tools, "amd-smi", {LIST: (fixture("amd-smi-no-driver.txt"), 1)})
    fake_tool(tools, "rocm-smi", {ROCM_QUERY: ("WARNING: No JSON data to report\n", 0)})
    with pytest.raises(DetectionError) as caught:
        AmdDetector().detect()
    assert NO_DRIVER in str(caught.value)
    assert "rocm-smi gave output that could not be read (not JSON): 'WARNING: No JSON data to report'" in str(
        caught.value
    )


def test_a_hung_amd_smi_is_a_detection_error(tools: Path) -> None:
    fake_tool(tools, "amd-smi", amd_smi_run("24.6", "4x-mi300x"), sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        AmdDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


def test_truncated_amd_smi_json_is_a_detection_error_naming_the_command(tools: Path) -> None:
    answers = amd_smi_run("24.6", "4x-mi300x")
    metric, _ = answers[METRIC]
    answers[METRIC] = (metric[: len(metric) // 2], 0)
    fake_tool(tools, "amd-smi", answers)
    with pytest.raises(DetectionError, match="^amd-smi metric gave output that could not be read"):
        AmdDetector().detect()


@pytest.mark.parametrize(
    "metric",
    ["[]", '[{"gpu": 0, "mem_usage": {"total_vram": "N/A"}}]', '{"gpu_data": {"gpu": 0}}', '[{"card": 0}]'],
    ids=["no-gpus", "no-vram-total", "gpu-data-not-a-list", "no-gpu-number"],
)
def test_amd_smi_output_without_the_readings_is_a_detection_error(metric: str) -> None:
    with pytest.raises(DetectionError, match="amd-smi metric"):
        parse_amd_smi(
            fixture("amd-smi-24.6-list-4x-mi300x.json"),
            fixture("amd-smi-24.6-static-asic-4x-mi300x.json"),
            metric,
        )


# --- rocm-smi -----------------------------------------------------------------------------------------


def test_rocm_smi_is_read_where_amd_smi_is_missing(tools: Path) -> None:
    fake_tool(tools, "rocm-smi", {ROCM_QUERY: (fixture("rocm-smi-6.1-2x-rx7900xt.json"), 0)})
    idle, busy = AmdDetector().detect()

    assert (idle.index, busy.index) == (0, 1)
    assert idle.memory.total == 21458059264 and idle.memory.used == 27856896
    assert idle.uuid == "0x5c88007d760374f3" and idle.temperature == 34
    assert busy.memory.used == 19327352832 and busy.core.utilization_rate == 99
    assert busy.core.total == 0  # rocm-smi does not report compute units


def test_a_warning_before_rocm_smis_json_is_skipped() -> None:
    [device] = parse_rocm_smi(fixture("rocm-smi-6.1-low-power-warning-1x-w7900.txt"))
    assert device.name == "AMD Radeon PRO W7900"
    assert device.memory.total == 48301604864 and device.uuid == ""


def test_hygon_cards_in_a_dtk_rocm_smi_are_left_to_the_hygon_detector() -> None:
    assert parse_rocm_smi(fixture("rocm-smi-dtk-2x-z100l.json")) == []


@pytest.mark.parametrize(
    "output",
    [
        '{"card0": {"GPU use (%)": "0"',
        '{"system": {"Driver version": "6.7.0"}}',
        '{"card0": {"GPU use (%)": "3"}}',
    ],
    ids=["truncated", "no-cards", "no-vram"],
)
def test_unreadable_rocm_smi_output_is_a_detection_error_naming_rocm_smi(output: str) -> None:
    with pytest.raises(DetectionError, match="rocm-smi"):
        parse_rocm_smi(output)


def test_available_with_either_tool(tools: Path) -> None:
    assert not AmdDetector().available()
    fake_tool(tools, "rocm-smi", {})
    assert AmdDetector().available()


# --- units --------------------------------------------------------------------------------------------


def test_quantities_are_read_in_every_shape_amd_smi_has_printed() -> None:
    assert quantity({"value": 42, "unit": "%"}) == 42
    assert quantity("42.5 %") == 42.5
    assert quantity(7) == 7
    assert quantity("N/A") is None and quantity({"value": "N/A"}) is None and quantity(True) is None
    assert quantity_bytes({"value": 196592, "unit": "MB"}) == 196592 * MiB
    assert quantity_bytes("196592 MB") == 196592 * MiB
    assert quantity_bytes("1024", default_unit="B") == 1024
    assert quantity_bytes({"value": 1, "unit": "furlongs"}) is None
