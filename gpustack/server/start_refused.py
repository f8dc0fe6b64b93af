"""Why a server must not start: raised while it prepares, printed by `gpustack start` as one line."""

from __future__ import annotations


class StartRefused(RuntimeError):
    """This server must not start; the message says why and what to do."""
