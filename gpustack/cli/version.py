"""`gpustack version`: print the version."""

from __future__ import annotations

import argparse
import platform

from gpustack import __version__


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("version", help="Print the version.")
    parser.set_defaults(handler=run)


def run(_args: argparse.Namespace) -> int:
    system = f"{platform.system()} {platform.machine()}"
    print(f"gpustack {__version__} (Python {platform.python_version()}, {system})")
    return 0
