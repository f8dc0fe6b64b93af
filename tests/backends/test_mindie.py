"""MindIE's config.json and rank table, generated from placements and checked against MindIE Service's
documented format: the keys its parameter reference ("配置参数说明（服务化）", MindIE-LLM
docs/zh/user_guide/user_manual/service_parameter_configuration.md) marks required, with the documented
types and ranges, and the rank_table_file.json of its multi-node guide (rank_table_file_configuration.md).
MindIE itself cannot run here (no Ascend NPU)."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpustack.backends.ascend_mindie import MULTI_NODE_NOT_STARTED
from gpustack.backends.base import Devices, Executable, Launch
from gpustack.backends.mindie_config import RankTableNode, mindie_config, rank_table
from gpustack.backends.registry import backend_of
from gpustack.estimate.mindie import parse_mindie_options
from gpustack.schemas.placement import ParallelLayout, PlacementMode
from tests.backends.helpers import spec
from tests.estimate.fixtures.safetensors_models import tiny_llama

DAEMON = Executable("/usr/local/Ascend/mindie/latest/mindie-service/bin/mindieservice_daemon", "PATH")
mindie = backend_of("ascend-mindie")

# The documented required keys and their types (uint/int as int); nested maps are checked on their own.
REQUIRED: dict[str, dict[str, type | tuple[type, ...]]] = {
    "": {"Version": str, "ServerConfig": dict, "BackendConfig": dict, "LogConfig": dict},
    "ServerConfig": {
        "ipAddress": str, "port": int, "allowAllZeroIpListening": bool, "maxLinkNum": int,
        "httpsEnabled": bool, "inferMode": str, "distDPServerEnabled": bool,
    },
    "BackendConfig": {
        "backendName": str, "modelInstanceNumber": int, "npuDeviceIds": list, "tokenizerProcessNumber": int,
        "ModelDeployConfig": dict, "ScheduleConfig": dict,
    },
    "ModelDeployConfig": {"maxSeqLen": int, "maxInputTokenLen": int, "ModelConfig": list},
    "ModelConfig": {
        "modelName": str, "modelWeightPath": str, "worldSize": int, "cpuMemSize": int, "npuMemSize": int,
        "backendType": str,
    },
    "ScheduleConfig": {
        "templateType": str, "templateName": str, "cacheBlockSize": int, "maxPrefillBatchSize": int,
        "maxPrefillTokens": int, "prefillTimeMsPerReq": int, "prefillPolicyType": int,
        "decodeTimeMsPerReq": int, "decodePolicyType": int, "maxBatchSize": int, "maxIterTimes": int,
        "maxPreemptCount": int, "supportSelectBatch": bool, "maxQueueDelayMicroseconds": int,
    },
    "LogConfig": {"dynamicLogLevelValidHours": int},
}  # fmt: skip


def _typed(section: str, values: dict[str, Any]) -> None:
    for key, kind in REQUIRED[section].items():
        assert key in values, f"{section or 'config'}: {key} is required"
        value = values[key]
        assert isinstance(value, kind) and not (kind is int and isinstance(value, bool)), (
            section,
            key,
            value,
        )


def check_documented_format(config: dict[str, Any]) -> None:
    """Every required key with its documented type, and the documented ranges and relations."""
    _typed("", config)
    server, backend = config["ServerConfig"], config["BackendConfig"]
    _typed("ServerConfig", server)
    _typed("BackendConfig", backend)
    deploy, schedule = backend["ModelDeployConfig"], backend["ScheduleConfig"]
    _typed("ModelDeployConfig", deploy)
    _typed("ScheduleConfig", schedule)
    _typed("LogConfig", config["LogConfig"])
    assert config["Version"] == "1.0.0"
    ipaddress.ip_address(server["ipAddress"])
    assert server["ipAddress"] != "0.0.0.0" or server["allowAllZeroIpListening"]
    for port in ("port", "managementPort", "metricsPort"):
        assert 1024 <= server.get(port, 1025) <= 65535
    assert 1 <= server["maxLinkNum"] <= 4096 and server["inferMode"] in ("standard", "dmi")
    assert backend["backendName"] == "mindieservice_llm_engine"
    assert 1 <= backend["modelInstanceNumber"] <= 10 and 1 <= backend["tokenizerProcessNumber"] <= 32
    assert all(
        isinstance(ids, list) and all(isinstance(i, int) for i in ids) for ids in backend["npuDeviceIds"]
    )
    assert 1024 <= backend.get("multiNodesInferPort", 1120) <= 65535
    assert deploy["maxSeqLen"] > 0 and 1 <= deploy["maxInputTokenLen"] <= 4194304
    assert deploy["maxInputTokenLen"] <= deploy["maxSeqLen"]
    for model in deploy["ModelConfig"]:
        _typed("ModelConfig", model)
        assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,254}[A-Za-z0-9])?", model["modelName"])
        assert model["npuMemSize"] == -1 or model["npuMemSize"] > 0
        assert model["backendType"] in ("atb", "ms") and model["modelInstanceType"] in (
            "Standard",
            "StandardMock",
        )
    assert schedule["templateType"] in ("Standard", "Mix") and schedule["templateName"] == "Standard_LLM"
    block = schedule["cacheBlockSize"]
    assert 1 <= block <= 128 and (block == 128 or block % 16 == 0)
    assert 1 <= schedule["maxBatchSize"] <= 5000
    assert 1 <= schedule["maxPrefillBatchSize"] <= schedule["maxBatchSize"]
    assert deploy["maxInputTokenLen"] <= schedule["maxPrefillTokens"] <= 4194304
    assert 1 <= schedule["maxIterTimes"] <= deploy["maxSeqLen"]
    assert 0 <= schedule["maxPreemptCount"] <= schedule["maxBatchSize"]
    assert 500 <= schedule["maxQueueDelayMicroseconds"] <= 1000000
    assert 0 <= schedule["prefillTimeMsPerReq"] <= 1000 and 0 <= schedule["decodeTimeMsPerReq"] <= 1000
    assert schedule["prefillPolicyType"] in (0, 1, 2, 3) and schedule["decodePolicyType"] in (0, 1, 2, 3)


def check_rank_table(table: dict[str, Any], nodes: int, devices: int) -> None:
    assert set(table) == {"server_count", "server_list", "status", "version"}
    assert table["server_count"] == str(nodes) == str(len(table["server_list"]))
    assert (table["status"], table["version"]) == ("completed", "1.0")
    ranks = []
    for server in table["server_list"]:
        assert set(server) == {"device", "server_id", "container_ip"}
        ipaddress.ip_address(server["server_id"])
        assert len(server["device"]) == devices
        for device in server["device"]:
            assert set(device) == {"device_id", "device_ip", "rank_id"}
            assert all(isinstance(value, str) for value in device.values())  # every value a string
            assert 0 <= int(device["device_id"]) < devices
            ipaddress.ip_address(device["device_ip"])
            ranks.append(int(device["rank_id"]))
    assert ranks == list(range(nodes * devices))  # node by node, device by device


def launch(layout: ParallelLayout, devices: Devices, **fields: Any) -> Launch:
    return Launch(
        model_name="qwen2.5-7b", model_path="/models/qwen", port=40001, executable=DAEMON,
        mode=PlacementMode.TENSOR_PARALLEL, layout=layout, devices=devices, run_dir="/run/7", **fields,
    )  # fmt: skip


def test_a_single_node_config_is_in_mindies_documented_format_with_the_placements_values() -> None:
    model = spec("ascend-mindie", backend_parameters=["--npu-memory-fraction=0.8"])
    options = mindie.parse_options(model.backend_parameters)
    devices = Devices("npu", (4, 5, 6, 7), ("4", "5", "6", "7"))
    result = mindie.command(
        model, options, launch(ParallelLayout(tensor_parallel_size=4, max_model_len=8192), devices)
    )
    config = json.loads(result.files["config.json"])
    check_documented_format(config)
    assert (config["ServerConfig"]["ipAddress"], config["ServerConfig"]["port"]) == ("127.0.0.1", 40001)
    assert config["BackendConfig"]["npuDeviceIds"] == [[0, 1, 2, 3]]  # after ASCEND_RT_VISIBLE_DEVICES
    assert config["BackendConfig"]["multiNodesInferEnabled"] is False
    model_config = config["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]
    assert (model_config["worldSize"], model_config["modelName"]) == (4, "qwen2.5-7b")
    assert config["BackendConfig"]["ModelDeployConfig"]["maxSeqLen"] == 8192
    assert result.env["ASCEND_RT_VISIBLE_DEVICES"] == "4,5,6,7" and result.env["NPU_MEMORY_FRACTION"] == "0.8"
    assert result.env["MIES_CONFIG_JSON_PATH"] == "/run/7/config.json" and "RANK_TABLE_FILE" not in result.env


@pytest.mark.parametrize(
    ("parameters", "max_seq_len", "prefill", "input_len"),
    [
        ([], 8192, 8192, 8191),
        (["--max-seq-len", "4096"], 4096, 4096, 4095),
        (["--max-seq-len=32768", "--max-prefill-tokens=8192"], 32768, 8192, 8192),
    ],
)
def test_max_seq_len_is_the_faqs_parameter_or_8192_and_the_limits_that_follow_it_stay_valid(
    parameters: list[str], max_seq_len: int, prefill: int, input_len: int
) -> None:
    options = parse_mindie_options(parameters)
    config = mindie_config(
        model_name="m", model_path="/m", host="127.0.0.1", port=40000, devices=1,
        max_seq_len=options.max_seq_len or 8192, options=options,
    )  # fmt: skip
    check_documented_format(config)
    deploy, schedule = config["BackendConfig"]["ModelDeployConfig"], config["BackendConfig"]["ScheduleConfig"]
    assert (deploy["maxSeqLen"], schedule["maxPrefillTokens"], deploy["maxInputTokenLen"]) == (
        max_seq_len, prefill, input_len
    )  # fmt: skip
    assert schedule["maxIterTimes"] == max_seq_len


def test_mindie_is_always_told_the_sequence_length_it_was_estimated_for(tmp_path: Path) -> None:
    # Before: a model shorter than 8192 got no length in the placement and MindIE was told 8192 anyway (its
    # own default, 2560, was never what was estimated either).
    tiny_llama(str(tmp_path / "m"), max_position_embeddings=4096)
    model = spec("ascend-mindie", local_path=str(tmp_path / "m"))
    need = mindie.requirement(model, mindie.parse_options([]), False).need
    assert need.max_model_len == 4096  # type: ignore[union-attr]


def test_across_nodes_the_config_and_rank_table_follow_the_documented_multi_node_format() -> None:
    devices = Devices("npu", (0, 1), ("0", "1"))
    layout = ParallelLayout(workers=2, devices_per_worker=2, max_model_len=8192)
    ips = {"10.0.0.1": ("192.168.1.10", "192.168.1.11"), "10.0.0.2": ("192.168.2.10", "192.168.2.11")}
    result = mindie.command(
        spec("ascend-mindie"), mindie.parse_options([]),
        launch(layout, devices, worker_ip="10.0.0.1", subordinate_ips=("10.0.0.2",), device_ips=ips),
    )  # fmt: skip
    config = json.loads(result.files["config.json"])
    check_documented_format(config)
    assert config["BackendConfig"]["multiNodesInferEnabled"] is True
    assert config["BackendConfig"]["ModelDeployConfig"]["ModelConfig"][0]["worldSize"] == 4
    table = json.loads(result.files["rank_table_file.json"])
    check_rank_table(table, nodes=2, devices=2)
    assert table["server_list"][0]["server_id"] == "10.0.0.1"  # the master: the main worker
    assert table["server_list"][1]["device"][1] == {
        "device_id": "1",
        "device_ip": "192.168.2.11",
        "rank_id": "3",
    }
    assert result.env["RANK_TABLE_FILE"] == "/run/7/rank_table_file.json"
    assert (result.env["MASTER_IP"], result.env["MIES_CONTAINER_IP"], result.env["WORLD_SIZE"]) == (
        "10.0.0.1", "10.0.0.1", "4"
    )  # fmt: skip


def test_across_nodes_without_the_npus_roce_addresses_mindie_is_refused_with_what_to_do() -> None:
    layout = ParallelLayout(workers=2, devices_per_worker=2)
    with pytest.raises(ValueError, match="Deploy the model on one worker's NPUs") as refused:
        mindie.command(
            spec("ascend-mindie"), mindie.parse_options([]),
            launch(layout, Devices("npu", (0, 1), ("0", "1")), subordinate_ips=("10.0.0.2",)),
        )  # fmt: skip
    assert str(refused.value) == MULTI_NODE_NOT_STARTED


def test_a_rank_table_numbers_ranks_node_by_node() -> None:
    table = rank_table(
        [RankTableNode("10.0.0.1", [(0, "192.168.1.1")]), RankTableNode("10.0.0.2", [(0, "192.168.1.2")])]
    )
    check_rank_table(table, nodes=2, devices=1)


def test_a_model_name_mindie_would_refuse_is_said_so() -> None:
    with pytest.raises(ValueError, match="MindIE accepts model names"):
        mindie_config(
            model_name="-bad", model_path="/m", host="127.0.0.1", port=40000, devices=1, max_seq_len=8192,
            options=parse_mindie_options([]),
        )  # fmt: skip
