"""Every backend by name: the one place that knows which exist. Adding one is a module plus a line here."""

from __future__ import annotations

from typing import Any

from gpustack.backends import ascend_mindie, custom, llama_box, vllm, vox_box
from gpustack.backends.base import Backend
from gpustack.backends.errors import UnknownBackend


def _by_name(*backends: Backend[Any]) -> dict[str, Backend[Any]]:
    return {backend.name: backend for backend in backends}


BACKENDS = _by_name(llama_box.BACKEND, vllm.BACKEND, vox_box.BACKEND, ascend_mindie.BACKEND, custom.BACKEND)


def backend_of(name: str | Any) -> Backend[Any]:
    """The backend for a model's `backend` field (a string or BackendEnum)."""
    key = getattr(name, "value", name)
    found = BACKENDS.get(key)
    if found is None:
        raise UnknownBackend(f"unknown backend {key!r}; this server knows {', '.join(sorted(BACKENDS))}")
    return found
