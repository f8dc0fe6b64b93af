"""Command-line helpers every backend uses: the user's parameters as argv items, and which flags they set."""

from __future__ import annotations

import shlex
from collections.abc import Iterable


def split_items(parameters: Iterable[str]) -> list[str]:
    """The user's parameters as separate argv items: '--ctx-size=2048' and '--ctx-size 2048' both become
    '--ctx-size', '2048' (llama.cpp's parser takes neither form, argparse only the first)."""
    argv: list[str] = []
    for item in parameters:
        item = item.strip()
        if item.startswith("-") and any(c.isspace() for c in item):
            flag, value = item.split(None, 1)
            argv.extend([flag, value.strip()])
        elif item.startswith("-") and "=" in item:
            flag, value = item.split("=", 1)
            argv.extend([flag, value])
        else:
            argv.append(item)
    return argv


def has_flag(argv: Iterable[str], *flags: str) -> bool:
    """Whether argv sets any of `flags` (as an item of its own or as --flag=value)."""
    wanted = set(flags)
    return any(item in wanted or item.split("=", 1)[0] in wanted for item in argv)


def quoted(argv: list[str]) -> str:
    return " ".join(shlex.quote(item) for item in argv)
