"""`gpustack detect`: print, as JSON, the status this machine's worker would report."""

from __future__ import annotations

import argparse
import json
import os
import sys

from gpustack.cli.options import add_flags
from gpustack.config import ConfigError, load_config


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "detect",
        help="Print the status this machine's worker would report, as JSON.",
        description="Detects this machine's CPU, memory, disks, OS and accelerators as a worker would, and "
        "prints it as JSON, so a node can be checked before it joins. Exits 1 when a vendor tool fails "
        "(the worker would be not_ready; state_message says why).",
    )
    add_flags(parser, ["config_file", "data_dir", "worker_name"])
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from gpustack.worker.agent import worker_name_for
    from gpustack.worker.detect import detect_status

    values = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    try:
        config = load_config(values, os.environ)
    except ConfigError as exc:
        print(f"gpustack detect: {exc}", file=sys.stderr)
        return 2
    name = worker_name_for(config)
    status, errors = detect_status(name, config.resources)
    report = {
        "name": name,
        "state": "not_ready" if errors else "ready",
        "state_message": ("GPU detection failed: " + "; ".join(errors)) if errors else "",
        "status": status.model_dump(mode="json"),
    }
    print(json.dumps(report, indent=2))
    return 1 if errors else 0
