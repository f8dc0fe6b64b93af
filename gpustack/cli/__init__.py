"""The `gpustack` command: one module per subcommand."""

from __future__ import annotations

import argparse
import sys

from gpustack import __version__
from gpustack.cli import detect, estimate, reset_admin_password, service, start, version


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gpustack", description="GPUStack: serve AI models on your GPU cluster."
    )
    parser.add_argument("--version", action="version", version=f"gpustack {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (start, detect, estimate, version, reset_admin_password, service):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    result: int = args.handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
