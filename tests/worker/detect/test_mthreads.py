"""Moore Threads detection on recorded `mthreads-gmi -q` runs, through fake executables on PATH."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.base import DetectionError
from gpustack.worker.detect.mthreads import MthreadsDetector, parse_mthreads_gmi_query
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "mthreads"
MiB = 1024**2
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@posix_only
def test_every_gpu_block_is_a_musa_device_with_memory_in_bytes(tools: Path) -> None:
    fake_tool(tools, "mthreads-gmi", {"-q": (fixture("gmi-q-2x-s4000-one-busy.txt"), 0)})

    devices = MthreadsDetector().detect()

    assert [(d.index, d.name, d.vendor, d.type) for d in devices] == [
        (0, "MTT S4000", "Moore Threads", GPUType.MUSA),
        (1, "MTT S4000", "Moore Threads", GPUType.MUSA),
    ]
    idle = devices[0]
    assert idle.uuid == "bf1da7bf-7a3c-d5b2-4e8f-91c0a6d3e2f4"
    assert (idle.memory.total, idle.memory.used, idle.temperature) == (49152 * MiB, 1 * MiB, 40.0)
    assert (idle.core.utilization_rate, idle.core.total) == (0.0, 0)
    assert idle.visible_id == "" and idle.id == ""


def test_a_busy_gpu_reports_its_utilization_and_memory_used() -> None:
    busy = parse_mthreads_gmi_query(fixture("gmi-q-2x-s4000-one-busy.txt"))[1]
    assert (busy.memory.used, busy.core.utilization_rate, busy.temperature) == (46810 * MiB, 98.0, 76.0)
    assert busy.memory.utilization_rate == round(46810 / 49152 * 100, 2)


def test_the_newer_report_reads_the_same_and_not_available_utilization_is_zero() -> None:
    devices = parse_mthreads_gmi_query(fixture("gmi-q-3x-s5000.txt"))
    assert [(d.index, d.name, d.memory.total, d.memory.used) for d in devices] == [
        (0, "MTT S5000", 81920 * MiB, 66641 * MiB),
        (1, "MTT S5000", 81920 * MiB, 64889 * MiB),
        (2, "MTT S5000", 81920 * MiB, 10 * MiB),
    ]
    assert devices[1].core.utilization_rate == 0.0
    assert devices[0].uuid == "399282a8-ba01-1475-893c-2eeca9e302f5"


def test_a_report_indented_with_tabs_reads_the_same() -> None:
    spaced = parse_mthreads_gmi_query(fixture("gmi-q-3x-s5000.txt"))
    tabbed = parse_mthreads_gmi_query(fixture("gmi-q-3x-s5000.txt").replace("    ", "\t"))
    assert tabbed == spaced


def test_a_machine_with_no_attached_gpu_has_no_devices() -> None:
    report = "Timestamp                : Tue Jul  2 10:21:07 2024\nDriver Version           : 1.2.0\n"
    assert parse_mthreads_gmi_query(report + "Attached GPUs            : 0\n") == []


@posix_only
def test_the_driver_s_complaint_reaches_the_user_verbatim(tools: Path) -> None:
    fake_tool(tools, "mthreads-gmi", {"-q": (fixture("gmi-driver-not-loaded.txt"), 255)})
    with pytest.raises(DetectionError) as raised:
        MthreadsDetector().detect()
    assert fixture("gmi-driver-not-loaded.txt").strip() in str(raised.value)
    assert "exit code 255" in str(raised.value)


@posix_only
def test_a_hung_mthreads_gmi_is_a_detection_error(tools: Path) -> None:
    fake_tool(tools, "mthreads-gmi", {"-q": ("", 0)}, sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        MthreadsDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


@posix_only
def test_a_truncated_report_is_a_detection_error_naming_mthreads_gmi(tools: Path) -> None:
    fake_tool(tools, "mthreads-gmi", {"-q": (fixture("gmi-q-truncated.txt"), 0)})
    with pytest.raises(DetectionError, match="^mthreads-gmi gave output that could not be read"):
        MthreadsDetector().detect()


def test_a_report_cut_between_two_gpus_is_not_read_as_fewer_gpus() -> None:
    report = fixture("gmi-q-2x-s4000-one-busy.txt")
    first_gpu_only = report[: report.index("GPU 00000000:13:00.0")]
    with pytest.raises(DetectionError, match="2 GPUs attached but 1 described"):
        parse_mthreads_gmi_query(first_gpu_only)


@pytest.mark.parametrize(
    "output",
    [
        "",
        "mthreads-gmi version 1.12.2\n",
        '{"Driver Version": "3.3.5-server", "GPU": []}',
        "Attached GPUs : 1\nGPU 00000000:12:00.0\n    Index : 0\n    Product Name : MTT S4000\n",
        "GPU 00000000:12:00.0\n    Product Name : MTT S4000\n    FB Memory Usage\n        Total : N/A\n"
        "        Used : 0MiB\n",
    ],
    ids=["empty", "version-only", "json", "no-memory", "memory-not-a-number"],
)
def test_unreadable_output_is_a_detection_error_naming_mthreads_gmi(output: str) -> None:
    with pytest.raises(DetectionError, match="^mthreads-gmi gave output that could not be read"):
        parse_mthreads_gmi_query(output)


@posix_only
def test_available_only_when_mthreads_gmi_is_on_path(tools: Path) -> None:
    assert not MthreadsDetector().available()
    fake_tool(tools, "mthreads-gmi", {})
    assert MthreadsDetector().available()
