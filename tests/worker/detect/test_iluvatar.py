"""Iluvatar detection on recorded `ixsmi` runs, through fake `ixsmi` executables on PATH."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.base import DetectionError
from gpustack.worker.detect.iluvatar import IluvatarDetector, parse_ixsmi_csv
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "iluvatar"
MiB = 1024**2
QUERY = (
    "--query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,temperature.gpu "
    "--format=csv,noheader,nounits"
)
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def detector(tmp_path: Path, timeout: float = 15) -> IluvatarDetector:
    return IluvatarDetector(timeout=timeout, corex_ixsmi=str(tmp_path / "corex" / "bin" / "ixsmi"))


@posix_only
def test_every_gpu_ixsmi_lists_is_a_corex_device_with_memory_in_bytes(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {QUERY: (fixture("ixsmi-query-4x-bi-v150-one-busy.csv"), 0)})

    devices = detector(tmp_path).detect()

    assert [(d.index, d.name, d.vendor, d.type) for d in devices] == [
        (i, "Iluvatar BI-V150", "Iluvatar", GPUType.COREX) for i in range(4)
    ]
    idle = devices[0]
    assert idle.uuid == "GPU-7c1f6d2e-3a4b-5c6d-8e9f-0a1b2c3d4e5f"
    assert (idle.memory.total, idle.memory.used, idle.temperature) == (32768 * MiB, 64 * MiB, 34.0)
    assert idle.visible_id == "" and idle.id == "" and idle.core.total == 0


def test_a_busy_gpu_reports_its_utilization_and_memory_used() -> None:
    busy = parse_ixsmi_csv(fixture("ixsmi-query-4x-bi-v150-one-busy.csv"))[1]
    assert (busy.memory.used, busy.core.utilization_rate, busy.temperature) == (31322 * MiB, 99.0, 68.0)
    assert busy.memory.utilization_rate == round(31322 / 32768 * 100, 2)


def test_utilization_not_available_reads_as_zero() -> None:
    assert parse_ixsmi_csv(fixture("ixsmi-query-4x-bi-v150-one-busy.csv"))[3].core.utilization_rate == 0.0


def test_values_that_keep_their_units_are_read_the_same() -> None:
    devices = parse_ixsmi_csv(fixture("ixsmi-query-2x-mr-v100-with-units.csv"))
    assert [
        (d.name, d.memory.total, d.memory.used, d.core.utilization_rate, d.temperature) for d in devices
    ] == [
        ("Iluvatar MR-V100", 32768 * MiB, 116 * MiB, 0.0, 30.0),
        ("Iluvatar MR-V100", 32768 * MiB, 27996 * MiB, 87.0, 36.0),
    ]


@posix_only
def test_the_driver_s_complaint_reaches_the_user_verbatim(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {QUERY: (fixture("ixsmi-driver-error.txt"), 9)})
    with pytest.raises(DetectionError) as raised:
        detector(tmp_path).detect()
    assert fixture("ixsmi-driver-error.txt").strip() in str(raised.value)
    assert "exit code 9" in str(raised.value)


@posix_only
def test_ixsmi_finding_no_devices_is_an_empty_list(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {QUERY: (fixture("ixsmi-no-devices.txt"), 6)})
    assert detector(tmp_path).detect() == []


@posix_only
def test_a_hung_ixsmi_is_a_detection_error(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {QUERY: ("", 0)}, sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        detector(tmp_path, timeout=0.5).detect()
    assert time.monotonic() - started < 10


@posix_only
def test_truncated_output_is_a_detection_error_naming_ixsmi(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {QUERY: (fixture("ixsmi-query-truncated.csv"), 0)})
    with pytest.raises(DetectionError, match="^ixsmi gave output that could not be read"):
        detector(tmp_path).detect()


@pytest.mark.parametrize(
    "output",
    [
        "",
        "\n\n",
        "index, name, uuid, memory.total [MiB], memory.used [MiB], utilization.gpu [%], temperature.gpu\n",
        "0, Iluvatar BI-V150, GPU-1, N/A, 64, 0, 34\n",
        "0, Iluvatar BI-V150, GPU-1, 32768, 64, 0, 34, 120.5\n",
        'Field "uuid" is not a valid field to query.\n',
    ],
    ids=["empty", "blank-lines", "header-only", "memory-not-a-number", "extra-field", "tool-complaint"],
)
def test_unreadable_output_is_a_detection_error_naming_ixsmi(output: str) -> None:
    with pytest.raises(DetectionError, match="^ixsmi gave output that could not be read"):
        parse_ixsmi_csv(output)


@posix_only
def test_ixsmi_in_the_corex_directory_is_found_off_path(tools: Path, tmp_path: Path) -> None:
    corex_bin = tmp_path / "corex" / "bin"
    corex_bin.mkdir(parents=True)
    assert not detector(tmp_path).available()

    fake_tool(corex_bin, "ixsmi", {QUERY: (fixture("ixsmi-query-2x-mr-v100-with-units.csv"), 0)})

    assert detector(tmp_path).available()
    assert len(detector(tmp_path).detect()) == 2


@posix_only
def test_available_when_ixsmi_is_on_path(tools: Path, tmp_path: Path) -> None:
    fake_tool(tools, "ixsmi", {})
    assert detector(tmp_path).available()
