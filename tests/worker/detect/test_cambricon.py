"""Cambricon detection on recorded `cnmon` runs, answered by a fake `cnmon` put first on PATH."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.base import DetectionError
from gpustack.worker.detect.cambricon import CambriconDetector, parse_cnmon_json

FIXTURES = Path(__file__).parent / "fixtures" / "cambricon"
MiB = 1024**2
QUERY = "info -e -m -u -j"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def fake_cnmon(bin_dir: Path, report: str | None, stdout: str = "", code: int = 0, sleep: float = 0) -> None:
    """A `cnmon` that, asked the detector's query, saves `report` as ./cnmon_info.json the way cnmon
    does, prints `stdout`, and exits with `code`. It also notes where it ran, for the tests."""
    script = bin_dir / "cnmon"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        f"time.sleep({sleep!r})\n"
        f"if ' '.join(sys.argv[1:]) != {QUERY!r}:\n"
        "    sys.stderr.write('invalid option: ' + ' '.join(sys.argv[1:]) + '\\n')\n"
        "    sys.exit(2)\n"
        f"open({str(bin_dir / 'ran-in')!r}, 'w').write(os.getcwd())\n"
        f"report = {report!r}\n"
        "if report is not None:\n"
        "    open('cnmon_info.json', 'w').write(report)\n"
        f"sys.stdout.write({stdout!r})\n"
        f"sys.exit({code})\n"
    )
    script.chmod(0o755)


def test_cnmon_lists_every_mlu_with_exact_bytes(tools: Path) -> None:
    fake_cnmon(tools, fixture("cnmon_info-v5.10-4x-mlu370-x4.json"), fixture("cnmon-stdout-mlu370-x4.txt"))
    devices = CambriconDetector().detect()

    assert [(d.index, d.name, d.vendor, d.type, d.visible_id) for d in devices] == [
        (i, "MLU370-X4", "Cambricon", GPUType.MLU, "") for i in range(4)
    ]
    idle = devices[0]
    assert idle.memory.total == 24576 * MiB and idle.memory.used == 625 * MiB
    assert idle.uuid == "MLU-20210000-1916-0000-0000-00A7C3F1B2E4"
    assert idle.temperature == 40 and idle.core.utilization_rate == 0


def test_a_busy_mlu_is_reported_busy(tools: Path) -> None:
    fake_cnmon(tools, fixture("cnmon_info-v5.10-4x-mlu370-x4.json"))
    busy = CambriconDetector().detect()[2]
    assert busy.memory.used == 23810 * MiB
    assert busy.memory.utilization_rate == pytest.approx(96.88, abs=0.01)
    assert busy.core.utilization_rate == 93 and busy.temperature == 68


def test_values_written_as_strings_are_read_and_n_a_is_unknown() -> None:
    idle, busy = parse_cnmon_json(fixture("cnmon_info-text-values-2x-mlu590-m9.json"))
    assert (idle.index, idle.name, idle.memory.total) == (0, "MLU590-M9", 81920 * MiB)
    assert idle.temperature is None
    assert (busy.memory.used, busy.core.utilization_rate, busy.temperature) == (40960 * MiB, 57, 71)


def test_cnmon_runs_in_a_private_directory_that_is_removed_afterwards(tools: Path) -> None:
    fake_cnmon(tools, fixture("cnmon_info-v5.10-4x-mlu370-x4.json"))
    CambriconDetector().detect()
    ran_in = (tools / "ran-in").read_text()
    assert ran_in != os.getcwd() and "gpustack-cnmon-" in ran_in
    assert not Path(ran_in).exists()
    assert not Path("cnmon_info.json").exists()


def test_a_failing_cnmon_is_quoted_verbatim_under_its_own_name(tools: Path) -> None:
    said = fixture("cnmon-driver-not-loaded.txt")
    fake_cnmon(tools, None, said, code=1)
    with pytest.raises(DetectionError) as caught:
        CambriconDetector().detect()
    assert str(caught.value) == f"`cnmon {QUERY}` failed (exit code 1): {said.strip()}"


def test_cnmon_that_saves_no_report_is_a_detection_error_quoting_what_it_printed(tools: Path) -> None:
    fake_cnmon(tools, None, fixture("cnmon-driver-not-loaded.txt"))
    with pytest.raises(DetectionError, match="wrote no cnmon_info.json; it said: cnmon: failed to open"):
        CambriconDetector().detect()


def test_a_hung_cnmon_is_a_detection_error(tools: Path) -> None:
    fake_cnmon(tools, fixture("cnmon_info-v5.10-4x-mlu370-x4.json"), sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match=f"^`cnmon {QUERY}` did not answer"):
        CambriconDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


def test_a_truncated_report_is_a_detection_error_naming_it(tools: Path) -> None:
    report = fixture("cnmon_info-v5.10-4x-mlu370-x4.json")
    fake_cnmon(tools, report[: len(report) // 2])
    with pytest.raises(DetectionError, match="^cnmon_info.json gave output that could not be read"):
        CambriconDetector().detect()


@pytest.mark.parametrize(
    "report",
    [
        '{"CnmonInfo": []}',
        "[]",
        '{"CnmonInfo": [{"ProductName": "MLU370-X4", "PhysicalMemUsage": {"Total": 24576}}]}',
        '{"CnmonInfo": [{"CardNum": 0, "PhysicalMemUsage": {"Total": "N/A"}}]}',
    ],
    ids=["no-cards", "no-cnmon-info", "no-card-number", "no-memory-total"],
)
def test_a_report_without_usable_cards_is_a_detection_error_not_an_empty_list(report: str) -> None:
    with pytest.raises(DetectionError, match="cnmon"):
        parse_cnmon_json(report)


def test_available_only_with_cnmon_on_path(tools: Path) -> None:
    assert not CambriconDetector().available()
    fake_cnmon(tools, None)
    assert CambriconDetector().available()
