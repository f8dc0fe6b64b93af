"""MindIE Service's config.json and HCCL's rank table, generated from a placement (pure).

The format is MindIE Service's documented one ("配置参数说明（服务化）": Version, LogConfig, ServerConfig,
BackendConfig with ModelDeployConfig/ModelConfig and ScheduleConfig; every key marked required there is
written, with the documented types) and the rank table of its multi-node guide (rank_table_file.json:
server_count, server_list of device_id/device_ip/rank_id, server_id, container_ip, status, version, every
value a string). What GPUStack decides:

- the HTTP endpoint: the instance's port on loopback; the management and metrics interfaces share that IP
  and port (MindIE's "single IP, single port" scheme), so one port of --service-port-range is enough;
- the NPUs: ASCEND_RT_VISIBLE_DEVICES shows the engine only the placement's, so npuDeviceIds counts from 0;
  worldSize is the instance's NPU count (across nodes, the rank table's);
- maxSeqLen: the FAQ's --max-seq-len, else what the estimate sized the KV cache for (8192 when the model
  allows more); maxPrefillTokens (--max-prefill-tokens) defaults to it, maxInputTokenLen is the smaller of
  maxSeqLen - 1 and maxPrefillTokens, maxIterTimes is maxSeqLen;
- the NPU memory fraction: NPU_MEMORY_FRACTION (--npu-memory-fraction, default 0.9), with npuMemSize -1 so
  the KV cache takes what the fraction leaves;
- no TLS inside the instance (GPUStack's worker proxy is the only client; nodes talk over the cluster's
  network), so no certificate paths are needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gpustack.estimate.mindie import MindieOptions

CONFIG_VERSION = "1.0.0"
RANK_TABLE_VERSION = "1.0"
BACKEND_NAME = "mindieservice_llm_engine"
MULTI_NODES_INFER_PORT = 1120  # MindIE's default for the nodes' own traffic
CPU_SWAP_GIB = 5  # cpuMemSize: MindIE's recommended value
MAX_LINKS = 300  # maxLinkNum: MindIE's recommended value
TOKENIZER_PROCESSES = 8
# modelName: letters, digits, '-', '.' and '_', not starting or ending with the last three, at most 256.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?$")


@dataclass(frozen=True)
class RankTableNode:
    """One server of a multi-node instance: its IP and its NPUs' (device id, RoCE IP), in rank order."""

    server_ip: str
    devices: Sequence[tuple[int, str]]


def mindie_model_name(name: str) -> str:
    """The model name as MindIE accepts it; ValueError saying why otherwise."""
    if not _MODEL_NAME.match(name):
        raise ValueError(
            f"MindIE accepts model names of letters, digits, '-', '.' and '_' (not first or last), up to "
            f"256 characters; {name!r} is not one: rename the model"
        )
    return name


def mindie_config(
    *,
    model_name: str,
    model_path: str,
    host: str,
    port: int,
    devices: int,
    max_seq_len: int,
    options: MindieOptions,
    world_size: int | None = None,
    multi_node: bool = False,
) -> dict[str, Any]:
    """config.json for one instance: `devices` NPUs on this node, `world_size` over all nodes."""
    world = world_size or max(devices, 1)
    prefill_tokens = options.max_prefill_tokens or max_seq_len
    # MindIE refuses maxPrefillTokens below maxInputTokenLen: a prompt longer than one prefill cannot run.
    input_tokens = max(1, min(max_seq_len - 1, prefill_tokens))
    batch = options.max_batch_size
    return {
        "Version": CONFIG_VERSION,
        "LogConfig": {"dynamicLogLevel": "", "dynamicLogLevelValidHours": 2, "dynamicLogLevelValidTime": ""},
        "ServerConfig": {
            "ipAddress": host,
            "managementIpAddress": host,
            "port": port,
            "managementPort": port,
            "metricsPort": port,
            "allowAllZeroIpListening": False,
            "maxLinkNum": MAX_LINKS,
            "httpsEnabled": False,
            "fullTextEnabled": False,
            "inferMode": "standard",
            "interCommTLSEnabled": False,
            "openAiSupport": "vllm",
            "tokenTimeout": 600,
            "e2eTimeout": 600,
            "distDPServerEnabled": False,
        },
        "BackendConfig": {
            "backendName": BACKEND_NAME,
            "modelInstanceNumber": 1,
            "npuDeviceIds": [list(range(max(devices, 1)))],
            "tokenizerProcessNumber": TOKENIZER_PROCESSES,
            "multiNodesInferEnabled": multi_node,
            "multiNodesInferPort": MULTI_NODES_INFER_PORT,
            "interNodeTLSEnabled": False,
            "ModelDeployConfig": {
                "maxSeqLen": max_seq_len,
                "maxInputTokenLen": input_tokens,
                "truncation": False,
                "ModelConfig": [
                    {
                        "modelInstanceType": "Standard",
                        "modelName": mindie_model_name(model_name),
                        "modelWeightPath": model_path,
                        "worldSize": world,
                        "cpuMemSize": CPU_SWAP_GIB,
                        "npuMemSize": -1,
                        "backendType": "atb",
                        "trustRemoteCode": False,
                    }
                ],
            },
            "ScheduleConfig": {
                "templateType": "Standard",
                "templateName": "Standard_LLM",
                "cacheBlockSize": options.cache_block_size,
                "maxPrefillBatchSize": min(options.max_prefill_batch_size, batch),
                "maxPrefillTokens": prefill_tokens,
                "prefillTimeMsPerReq": 150,
                "prefillPolicyType": 0,
                "decodeTimeMsPerReq": 50,
                "decodePolicyType": 0,
                "maxBatchSize": batch,
                "maxIterTimes": max_seq_len,
                "maxPreemptCount": 0,
                "supportSelectBatch": False,
                "maxQueueDelayMicroseconds": 5000,
            },
        },
    }


def rank_table(nodes: Sequence[RankTableNode]) -> dict[str, Any]:
    """HCCL's rank table for MindIE across nodes: the first node is the master; ranks count up node by
    node, device by device."""
    server_list = []
    rank = 0
    for node in nodes:
        devices = []
        for device_id, device_ip in node.devices:
            devices.append({"device_id": str(device_id), "device_ip": device_ip, "rank_id": str(rank)})
            rank += 1
        server_list.append({"device": devices, "server_id": node.server_ip, "container_ip": node.server_ip})
    return {
        "server_count": str(len(nodes)),
        "server_list": server_list,
        "status": "completed",
        "version": RANK_TABLE_VERSION,
    }
