"""What a model's backend parameters and environment may hold: what the worker owns (where the engine
listens), and sizes every operating system can start a process with.

The API refuses the rest with a 400; the worker checks again before it starts an engine, for settings
stored before these rules existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Linux refuses a single argument or environment string over MAX_ARG_STRLEN (128 KiB) with E2BIG
# ("Argument list too long"), and all of them together over ARG_MAX, which is never below 128 KiB
# (a quarter of an 8 MiB stack gives the usual 2 MiB); Windows caps a whole command line at 32,767
# characters and an environment block at 32,767 per variable. So: each parameter up to 16 KiB (a
# chat template inline fits; longer ones belong in a file), 24 KiB of parameters in all (under Windows'
# line with room for the worker's own arguments), and 64 KiB of environment, so that parameters,
# environment and the worker's inherited environment stay under the smallest ARG_MAX.
MAX_PARAMETERS = 256
MAX_PARAMETER_BYTES = 16 * 1024
MAX_PARAMETERS_BYTES = 24 * 1024
MAX_VARIABLES = 256
MAX_VARIABLE_NAME_BYTES = 256
MAX_VARIABLE_VALUE_BYTES = 16 * 1024
MAX_ENVIRONMENT_BYTES = 64 * 1024

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Flags the worker sets itself on every engine (llama.cpp, llama-box, vLLM, vox-box all spell them so).
# A user's copy would win (the engines take the last one given): --host 0.0.0.0 would publish an
# unauthenticated engine on the network, and a fixed --port would clash with the worker's choice.
_WORKER_OWNED = {
    "--host": "the worker sets --host itself: engines listen on 127.0.0.1 and are reached only "
    "through the worker's authenticated proxy",
    "--port": "the worker sets --port itself, choosing a free one in its --service-port-range",
}
# argparse (vLLM, vox-box) also takes any unambiguous prefix of a long flag: --hos 0.0.0.0 is --host.
_SHORTEST_PREFIX = 4


def _size(text: str) -> int:
    return len(text.encode("utf-8", errors="surrogatepass"))


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def flag_of(item: str) -> str | None:
    """The flag an item names: '--host' for '--host', '--host=x', '--host x'; None for a value."""
    item = item.strip()
    if not item.startswith("-"):
        return None
    return re.split(r"[=\s]", item, maxsplit=1)[0]


def owned_flag(flag: str) -> str | None:
    """The worker-owned flag that `flag` spells (itself or an argparse abbreviation), else None."""
    if flag in _WORKER_OWNED:
        return flag
    if len(flag) >= _SHORTEST_PREFIX and flag.startswith("--"):
        for owned in _WORKER_OWNED:
            if owned.startswith(flag):
                return owned
    return None


def check_backend_parameters(items: Iterable[str]) -> None:
    """Raise ValueError, saying what to change, unless the worker can pass `items` to an engine."""
    items = list(items)
    if len(items) > MAX_PARAMETERS:
        raise ValueError(f"{len(items)} backend parameters given; at most {MAX_PARAMETERS} are accepted")
    total = 0
    for item in items:
        size = _size(item)
        if size > MAX_PARAMETER_BYTES:
            raise ValueError(
                f"backend parameter {_preview(item)} is {size} bytes; at most {MAX_PARAMETER_BYTES} bytes "
                "each (put a long value, such as a chat template, in a file and pass its path)"
            )
        total += size
        flag = flag_of(item)
        owned = owned_flag(flag) if flag else None
        if owned is not None:
            raise ValueError(f"backend parameter {_preview(item)}: {_WORKER_OWNED[owned]}; remove it")
    if total > MAX_PARAMETERS_BYTES:
        raise ValueError(
            f"backend parameters take {total} bytes in all; at most {MAX_PARAMETERS_BYTES} bytes together"
        )


def check_environment(variables: dict[str, str]) -> None:
    """Raise ValueError, saying what to change, unless an engine can be started with `variables`."""
    if len(variables) > MAX_VARIABLES:
        raise ValueError(f"{len(variables)} environment variables given; at most {MAX_VARIABLES}")
    total = 0
    for name, value in variables.items():
        if not _ENV_NAME_RE.match(name) or _size(name) > MAX_VARIABLE_NAME_BYTES:
            raise ValueError(
                f"environment variable name {_preview(name)} is invalid: use up to "
                f"{MAX_VARIABLE_NAME_BYTES} letters, digits and _, not starting with a digit"
            )
        if "\x00" in value:
            raise ValueError(
                f"environment variable {name} contains a NUL character, which no process can hold"
            )
        size = _size(value)
        if size > MAX_VARIABLE_VALUE_BYTES:
            raise ValueError(
                f"environment variable {name} is {size} bytes; at most {MAX_VARIABLE_VALUE_BYTES} bytes each"
            )
        total += _size(name) + size + 2  # NAME=value and its terminating NUL
    if total > MAX_ENVIRONMENT_BYTES:
        raise ValueError(f"the environment takes {total} bytes in all; at most {MAX_ENVIRONMENT_BYTES} bytes")
