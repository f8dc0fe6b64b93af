"""Ascend MindIE: a safetensors model folder on Ascend NPUs, served by MindIE's daemon.

MindIE reads a JSON configuration rather than flags: the command is its daemon, pointed at a config.json
the worker writes into the instance's run directory, generated from the placement (backends/mindie_config.py:
ports, NPU ids, world size, maxSeqLen, the NPU memory fraction). Across nodes MindIE also needs HCCL's rank
table, which names every NPU's RoCE address: GPUStack generates it when the launch knows those addresses
(Launch.device_ips), and otherwise refuses with what to do, since it does not collect them from the workers
yet, nor start MindIE's daemon on the other nodes.
"""

from __future__ import annotations

import dataclasses
import json
import os

from gpustack.backends.base import (
    NOTHING_IGNORED,
    Command,
    IgnoredFields,
    Launch,
    PipPackage,
    Probe,
    Requirement,
)
from gpustack.backends.devices import visible_env
from gpustack.backends.fields import reader_of, refuse_custom_fields, require_model_directory
from gpustack.backends.mindie_config import RankTableNode, mindie_config, rank_table
from gpustack.backends.parallel import read_model
from gpustack.estimate.mindie import MindieOptions, estimate_mindie, parse_mindie_options
from gpustack.scheduler.needs import mindie_need
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import ParallelLayout
from gpustack.schemas.routes import TEXT_GENERATION, OpenAIRoute
from gpustack.sources.base import ModelReader

DEFAULT_MAX_SEQ_LEN = 8192  # the FAQ's --max-seq-len default
CONFIG_FILE = "config.json"
RANK_TABLE_FILE = "rank_table_file.json"
MULTI_NODE_NOT_STARTED = (
    "MindIE across workers needs HCCL's rank table, with the RoCE address of every NPU on every node, and "
    "its daemon started on each node; this GPUStack does not collect those addresses from the workers nor "
    "start the other nodes' daemons. Deploy the model on one worker's NPUs (a worker selector, or a world "
    "size that fits one worker)"
)


class AscendMindie:
    name = "ascend-mindie"
    # MindIE ships in Ascend's images, not on PyPI: a version is an executable in bin-dir
    # (ascend-mindie_<version>, MindIE's mindieservice_daemon), else the daemon on PATH.
    default_version: str | None = None
    reads_help = False
    ignored_fields: IgnoredFields = NOTHING_IGNORED

    def pip_package(self, version: str, gpu_type: str | None) -> PipPackage | None:
        return None

    def programs(self, spec: ModelSpec) -> tuple[str, ...]:
        return ("mindieservice_daemon",)

    def check_spec(self, spec: ModelSpec) -> None:
        refuse_custom_fields(spec, self.name)
        require_model_directory(spec, self.name)

    def parse_options(self, parameters: list[str]) -> MindieOptions:
        return parse_mindie_options(parameters)

    def requirement(
        self, spec: ModelSpec, options: MindieOptions, ray: bool, model: ModelReader | None = None
    ) -> Requirement:
        estimate = estimate_mindie(read_model(reader_of(spec, model)), options)
        # MindIE's own default maxSeqLen (2560) is not what was estimated: it is always given one.
        need = dataclasses.replace(mindie_need(estimate, options), max_model_len=estimate.max_model_len)
        return Requirement(need, estimate.describe())

    def command(self, spec: ModelSpec, options: MindieOptions, launch: Launch) -> Command:
        layout = launch.layout if isinstance(launch.layout, ParallelLayout) else ParallelLayout()
        devices = max(len(launch.devices.indexes), 1)
        nodes = [launch.worker_ip, *launch.subordinate_ips] if layout.workers > 1 else [launch.worker_ip]
        config = mindie_config(
            model_name=launch.model_name,
            model_path=launch.model_path,
            host=launch.host,
            port=launch.port,
            devices=devices,
            max_seq_len=options.max_seq_len or layout.max_model_len or DEFAULT_MAX_SEQ_LEN,
            options=options,
            world_size=devices * len(nodes),
            multi_node=len(nodes) > 1,
        )
        env = {
            **visible_env(launch.devices),
            "MIES_CONFIG_JSON_PATH": os.path.join(launch.run_dir, CONFIG_FILE),
            "NPU_MEMORY_FRACTION": f"{options.npu_memory_fraction:g}",
        }
        files = {CONFIG_FILE: json.dumps(config, indent=2)}
        if len(nodes) > 1:
            known = [launch.device_ips.get(node) for node in nodes]
            if any(not ips or len(ips) != devices for ips in known):
                raise ValueError(MULTI_NODE_NOT_STARTED)
            table = rank_table(
                [
                    RankTableNode(node, list(enumerate(ips or ())))
                    for node, ips in zip(nodes, known, strict=True)
                ]
            )
            files[RANK_TABLE_FILE] = json.dumps(table, indent=2)
            env.update(
                RANK_TABLE_FILE=os.path.join(launch.run_dir, RANK_TABLE_FILE),
                MASTER_IP=launch.worker_ip,
                MIES_CONTAINER_IP=launch.worker_ip,
                WORLD_SIZE=str(devices * len(nodes)),
                ATB_LLM_HCCL_ENABLE="1",
            )
        return Command([launch.executable.path], env, files)

    def probe(self, spec: ModelSpec, options: MindieOptions) -> Probe:
        return Probe("/v1/models")

    def routes(self, spec: ModelSpec, options: MindieOptions) -> frozenset[OpenAIRoute]:
        return TEXT_GENERATION


BACKEND = AscendMindie()
