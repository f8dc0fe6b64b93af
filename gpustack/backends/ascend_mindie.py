"""Ascend MindIE: a safetensors model folder on Ascend NPUs, served by MindIE's daemon.

MindIE reads a JSON configuration rather than flags: the command is its daemon, pointed at a config.json
the worker writes into the instance's run directory. `mindie_config` is the seam where the configuration
is generated from the placement (ports, NPU ids, world size, maxSeqLen, the NPU memory fraction, the rank
table for several nodes); today it fills the fields the estimate and the placement decide.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from gpustack.backends.base import Command, Launch, PipPackage, Probe, Requirement
from gpustack.backends.devices import visible_env
from gpustack.backends.fields import reader_of, refuse_custom_fields, require_model_directory
from gpustack.backends.parallel import engine_max_len, read_model
from gpustack.estimate.mindie import MindieOptions, estimate_mindie, parse_mindie_options
from gpustack.scheduler.needs import mindie_need
from gpustack.schemas.models import ModelSpec
from gpustack.schemas.placement import ParallelLayout
from gpustack.schemas.routes import TEXT_GENERATION, OpenAIRoute
from gpustack.sources.base import ModelReader

DEFAULT_MAX_SEQ_LEN = 8192  # the FAQ's --max-seq-len default
CONFIG_FILE = "config.json"


class AscendMindie:
    name = "ascend-mindie"
    # MindIE ships in Ascend's images, not on PyPI: a version is an executable in bin-dir
    # (ascend-mindie_<version>, MindIE's mindieservice_daemon), else the daemon on PATH.
    default_version: str | None = None
    reads_help = False

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
        model_max = estimate.arch.max_model_len if estimate.arch is not None else None
        max_len = engine_max_len(options.max_seq_len, estimate.max_model_len, model_max)
        need = dataclasses.replace(mindie_need(estimate, options), max_model_len=max_len)
        return Requirement(need, estimate.describe())

    def command(self, spec: ModelSpec, options: MindieOptions, launch: Launch) -> Command:
        config = mindie_config(spec, options, launch)
        env = {
            **visible_env(launch.devices),
            "MIES_CONFIG_JSON_PATH": os.path.join(launch.run_dir, CONFIG_FILE),
        }
        return Command([launch.executable.path], env, {CONFIG_FILE: json.dumps(config, indent=2)})

    def probe(self, spec: ModelSpec, options: MindieOptions) -> Probe:
        return Probe("/v1/models")

    def routes(self, spec: ModelSpec, options: MindieOptions) -> frozenset[OpenAIRoute]:
        return TEXT_GENERATION


def mindie_config(spec: ModelSpec, options: MindieOptions, launch: Launch) -> dict[str, Any]:
    """MindIE's config.json for this placement (the fields GPUStack decides; MindIE defaults the rest)."""
    layout = launch.layout if isinstance(launch.layout, ParallelLayout) else ParallelLayout()
    max_seq_len = options.max_seq_len or layout.max_model_len or DEFAULT_MAX_SEQ_LEN
    world_size = max(len(launch.devices.indexes), 1)
    return {
        "ServerConfig": {
            "ipAddress": launch.host,
            "port": launch.port,
            "httpsEnabled": False,
        },
        "BackendConfig": {
            "npuDeviceIds": [list(range(world_size))],  # after ASCEND_RT_VISIBLE_DEVICES, counted from 0
            "multiNodesInferEnabled": layout.workers > 1,
            "ModelDeployConfig": {
                "maxSeqLen": max_seq_len,
                "maxInputTokenLen": max_seq_len,
                "ModelConfig": [
                    {
                        "modelName": launch.model_name,
                        "modelWeightPath": launch.model_path,
                        "worldSize": world_size,
                        "npuMemSize": -1,
                    }
                ],
            },
            "ScheduleConfig": {
                "cacheBlockSize": options.cache_block_size,
                "maxPrefillTokens": options.max_prefill_tokens or max_seq_len,
                "maxBatchSize": options.max_batch_size,
                "maxPrefillBatchSize": options.max_prefill_batch_size,
            },
        },
    }


BACKEND = AscendMindie()
