"""Ascend detection on recorded `npu-smi` runs, answered by a fake `npu-smi` put first on PATH."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytest

from gpustack.schemas.workers import GPUType
from gpustack.worker.detect.ascend import (
    AscendDetector,
    ascend_devices,
    parse_aicore_counts,
    parse_die_id,
    parse_npu_smi_info,
    parse_npu_smi_mapping,
)
from gpustack.worker.detect.base import DetectionError
from tests.worker.detect.fakes import fake_tool

FIXTURES = Path(__file__).parent / "fixtures" / "ascend"
MiB = 1024**2
DEVICE_USED = "dcmi model initialized failed, because the device is used. ret is -8020"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fake tools are scripts with a shebang")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def recorded(machine: str) -> dict[str, tuple[str, int]]:
    """Every recorded run of one machine: `info_-t_common_-i_4.txt` answers `info -t common -i 4`."""
    return {path.stem.replace("_", " "): (path.read_text(), 0) for path in (FIXTURES / machine).glob("*.txt")}


def fake_npu_smi(bin_dir: Path, answers: dict[str, tuple[str, int]], sleep: float = 0) -> None:
    """An `npu-smi` that prints the recorded text for the arguments it is given (errors on stdout too)."""
    fake_tool(bin_dir, "npu-smi", answers, sleep)


# --- whole detection through the fake tool -------------------------------------------------------------


def test_910b_cards_in_a_container_are_indexed_by_logical_id_not_by_npu_id(tools: Path) -> None:
    fake_npu_smi(tools, recorded("910b3-x4-container"))
    devices = AscendDetector().detect()

    assert [(d.index, d.name, d.vendor, d.type, d.visible_id) for d in devices] == [
        (0, "Ascend 910B3", "Huawei", GPUType.NPU, ""),
        (1, "Ascend 910B3", "Huawei", GPUType.NPU, ""),
        (2, "Ascend 910B3", "Huawei", GPUType.NPU, ""),
        (3, "Ascend 910B3", "Huawei", GPUType.NPU, ""),
    ]
    idle = devices[0]
    assert idle.memory.total == 65536 * MiB and idle.memory.used == 3391 * MiB
    assert idle.memory.utilization_rate == pytest.approx(5.17, abs=0.01)
    assert idle.core.total == 20 and idle.core.utilization_rate == 0
    assert idle.temperature == 37
    assert idle.uuid == "1E2F1C34-20A04A21-4C11E613-6DA7040A-00102002"
    assert len({d.uuid for d in devices}) == 4


def test_a_busy_910b_reports_its_hbm_and_aicore_use(tools: Path) -> None:
    fake_npu_smi(tools, recorded("910b3-x4-container"))
    busy = AscendDetector().detect()[1]  # NPU 5, logical id 1

    assert busy.memory.used == 60156 * MiB and busy.memory.total == 65536 * MiB
    assert busy.memory.utilization_rate == pytest.approx(91.79, abs=0.01)
    assert busy.core.utilization_rate == 97
    assert busy.temperature == 56


def test_a_300i_duo_card_gives_two_devices_with_their_own_ddr_memory(tools: Path) -> None:
    fake_npu_smi(tools, recorded("300i-duo-x2"))
    devices = AscendDetector().detect()

    assert [(d.index, d.name, d.memory.total // MiB, d.memory.used // MiB) for d in devices] == [
        (0, "Ascend 310P3", 44280, 23312),
        (1, "Ascend 310P3", 43693, 1412),
        (2, "Ascend 310P3", 44280, 1529),
        (3, "Ascend 310P3", 43693, 1411),
    ]
    assert devices[0].core.utilization_rate == 85
    assert [d.uuid for d in devices[:2]] == [
        "409921D4-2140A100-E54BDDD4-07CC040A-9B00301F",
        "409921D4-2140A100-E54BDDD4-07CC040A-9C00301F",
    ]
    assert all(d.core.total == 0 for d in devices)  # 310P's `-t common` has no Aicore Count
    assert all(d.visible_id == "" for d in devices)


@pytest.mark.parametrize("code", [0, 1], ids=["exit-0", "exit-1"])
def test_npus_held_by_another_container_reach_the_user_in_npu_smis_words(tools: Path, code: int) -> None:
    fake_npu_smi(tools, {"info": (fixture("errors/info-device-used-8020.txt"), code)})
    with pytest.raises(DetectionError) as caught:
        AscendDetector().detect()
    assert DEVICE_USED in str(caught.value)


def test_any_other_text_instead_of_the_table_is_quoted_verbatim(tools: Path) -> None:
    said = "dcmi module initialize failed. ret is -8005"
    fake_npu_smi(tools, {"info": (said + "\n", 0)})
    with pytest.raises(DetectionError, match=f"printed no NPU table; it said: {said}$"):
        AscendDetector().detect()


def test_a_hung_npu_smi_is_a_detection_error(tools: Path) -> None:
    fake_npu_smi(tools, {"info": ("", 0)}, sleep=30)
    started = time.monotonic()
    with pytest.raises(DetectionError, match="did not answer"):
        AscendDetector(timeout=0.5).detect()
    assert time.monotonic() - started < 10


def test_a_truncated_table_is_a_detection_error_naming_npu_smi(tools: Path) -> None:
    fake_npu_smi(tools, {"info": (fixture("errors/info-truncated.txt"), 0)})
    with pytest.raises(DetectionError, match="^npu-smi gave output that could not be read"):
        AscendDetector().detect()


def test_a_failing_id_map_fails_detection_with_npu_smis_message(tools: Path) -> None:
    answers = recorded("910b3-x4-container")
    answers["info -m"] = ("Error: this command is not supported in the container.\n", 255)
    fake_npu_smi(tools, answers)
    with pytest.raises(DetectionError, match="this command is not supported in the container"):
        AscendDetector().detect()


def test_card_details_that_fail_are_left_out_with_a_warning(
    tools: Path, caplog: pytest.LogCaptureFixture
) -> None:
    answers = {args: answer for args, answer in recorded("910b3-x4-container").items() if "board" not in args}
    fake_npu_smi(tools, answers)
    with caplog.at_level(logging.WARNING, logger="gpustack.worker.detect.ascend"):
        devices = AscendDetector().detect()

    assert [d.uuid for d in devices] == ["", "", "", ""]
    assert [d.core.total for d in devices] == [20, 20, 20, 20]
    assert "unexpected arguments: info -t board -i 4 -c 0" in caplog.text


def test_available_only_with_npu_smi_on_path(tools: Path) -> None:
    assert not AscendDetector().available()
    fake_npu_smi(tools, {})
    assert AscendDetector().available()


# --- parsing ------------------------------------------------------------------------------------------


def test_the_process_table_after_the_chips_is_not_read_as_chips() -> None:
    chips = parse_npu_smi_info(fixture("910b3-x4-container/info.txt"))
    assert [(c.npu_id, c.chip_id, c.name, c.health, c.bus_id) for c in chips] == [
        (4, 0, "910B3", "OK", "0000:81:00.0"),
        (5, 0, "910B3", "OK", "0000:41:00.0"),
        (6, 0, "910B3", "OK", "0000:C1:00.0"),
        (7, 0, "910B3", "OK", "0000:01:00.0"),
    ]


def test_a3_dies_take_their_logical_id_not_their_phy_id() -> None:
    chips = parse_npu_smi_info(fixture("a3-x1-two-dies/info.txt"))
    identities = parse_npu_smi_mapping(fixture("a3-x1-two-dies/info_-m.txt"))
    devices = ascend_devices(chips, identities, {}, {})

    assert [(d.index, d.name, d.memory.used // MiB) for d in devices] == [
        (0, "Ascend910", 3131),
        (1, "Ascend910", 2886),
    ]
    assert devices[1].temperature == 37


def test_the_id_map_skips_each_cards_mcu() -> None:
    mapping = parse_npu_smi_mapping(fixture("300i-duo-x2/info_-m.txt"))
    assert {key: (i.logic_id, i.name) for key, i in mapping.items()} == {
        (1, 0): (0, "Ascend 310P3"),
        (1, 1): (1, "Ascend 310P3"),
        (2, 0): (2, "Ascend 310P3"),
        (2, 1): (3, "Ascend 310P3"),
    }


def test_a_chip_missing_from_the_id_map_is_a_detection_error() -> None:
    chips = parse_npu_smi_info(fixture("910b3-x4-container/info.txt"))
    identities = parse_npu_smi_mapping(fixture("910b3-x4-container/info_-m.txt"))
    del identities[(6, 0)]
    with pytest.raises(DetectionError, match="no logical id for NPU 6 chip 0"):
        ascend_devices(chips, identities, {}, {})


@pytest.mark.parametrize(
    "cut",
    [7, 10, 11],
    ids=["after-the-first-card-row", "after-the-second-card-row", "after-a-chip-row-without-border"],
)
def test_a_table_cut_between_rows_is_a_detection_error(cut: int) -> None:
    lines = fixture("910b3-x4-container/info.txt").splitlines()
    with pytest.raises(DetectionError, match="^npu-smi gave output that could not be read"):
        parse_npu_smi_info("\n".join(lines[:cut]) + "\n")


def test_a_header_without_chips_is_a_detection_error_not_an_empty_list() -> None:
    lines = fixture("910b3-x4-container/info.txt").splitlines()
    with pytest.raises(DetectionError, match="listed no NPU chips"):
        parse_npu_smi_info("\n".join(lines[:6]) + "\n")


def test_a_card_row_followed_by_another_card_row_is_a_detection_error() -> None:
    lines = fixture("910b3-x4-container/info.txt").splitlines()
    del lines[7]  # NPU 4's chip row
    with pytest.raises(DetectionError, match="NPU 4 has no chip row"):
        parse_npu_smi_info("\n".join(lines))


@pytest.mark.parametrize(
    "output",
    ["", "Usage: npu-smi info -m\n", "\tNPU ID   Chip ID   Chip Name\n\t0   0   Ascend 910B3\n"],
    ids=["empty", "no-header", "no-logic-id-column"],
)
def test_an_unreadable_id_map_is_a_detection_error_naming_the_command(output: str) -> None:
    with pytest.raises(DetectionError, match="^npu-smi info -m gave output that could not be read"):
        parse_npu_smi_mapping(output)


def test_aicore_counts_are_read_per_chip_and_the_mcu_block_is_ignored() -> None:
    assert parse_aicore_counts(fixture("910b3-x4-container/info_-t_common_-i_5.txt")) == {0: 20}
    assert parse_aicore_counts(fixture("300i-duo-x2/info_-t_common_-i_1.txt")) == {}


def test_die_ids_are_read_from_either_board_layout() -> None:
    assert parse_die_id(fixture("910b3-x4-container/info_-t_board_-i_4_-c_0.txt")).startswith("1E2F1C34-")
    assert parse_die_id(fixture("300i-duo-x2/info_-t_board_-i_2_-c_1.txt")) == (
        "16E96E64-2100AA8D-4B2A68E4-AED8030A-54003039"
    )
    assert parse_die_id("") == ""
