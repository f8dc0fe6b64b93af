"""Command-line options generated from the settings table in gpustack.config."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from gpustack.config import FLAGS, FLAGS_BY_NAME


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str] | None = None) -> None:
    """Add the given settings (all command-line ones by default); absent flags stay None."""
    flags = [FLAGS_BY_NAME[name] for name in names] if names is not None else [f for f in FLAGS if f.cli]
    for flag in flags:
        spellings = [flag.option] + ([flag.short] if flag.short else [])
        default_note = f" Default: {flag.default}." if flag.default not in (None, False) else ""
        if flag.is_switch:
            parser.add_argument(
                *spellings, dest=flag.name, action="store_const", const=True, default=None, help=flag.help
            )
        elif flag.repeatable:
            parser.add_argument(
                *spellings, dest=flag.name, action="append", default=None, help=flag.help + default_note
            )
        else:
            parser.add_argument(*spellings, dest=flag.name, default=None, help=flag.help + default_note)
