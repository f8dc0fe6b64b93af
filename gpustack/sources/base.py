"""The contract every model source implements (`ModelSource`), and the plain values that cross it.

A source knows its fields on the model spec, how to read a model's headers for the estimate without
downloading it (`ModelReader`), which files a deployment needs (`FileSet`, listed through the hub's API),
and the key under which a worker keeps one copy of them. The worker's download code (worker/files/) and
the server's estimate (server/requirements.py) are the same for every source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from gpustack.estimate.gguf import GGUFHeader
from gpustack.estimate.safetensors import ModelFiles

if TYPE_CHECKING:
    from gpustack.config import Config
    from gpustack.schemas.models import ModelSpec

ModelFormat = Literal["gguf", "safetensors", "unknown"]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_MODELSCOPE_ENDPOINT = "https://www.modelscope.cn"
DEFAULT_OLLAMA_BASE_URL = "https://registry.ollama.ai"


class SourceError(ValueError):
    """A model that cannot be found, read or listed where it is; the message names it and says what to do."""


@dataclass(frozen=True)
class SourceSettings:
    """Where the hubs are and how to authenticate, read once from the configuration and the environment
    the hubs' own clients read (HF_ENDPOINT, HF_TOKEN, MODELSCOPE_DOMAIN, ...)."""

    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    hf_token: str | None = None
    modelscope_endpoint: str = DEFAULT_MODELSCOPE_ENDPOINT
    modelscope_token: str | None = None
    ollama_base_url: str = DEFAULT_OLLAMA_BASE_URL
    # The proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY and their lower-case spellings).
    environ: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, config: Config | None = None, environ: Mapping[str, str] | None = None) -> SourceSettings:
        env = dict(os.environ if environ is None else environ)
        hf_token = getattr(config, "huggingface_token", None) or env.get("HF_TOKEN")
        ollama = getattr(config, "ollama_library_base_url", None)
        modelscope = env.get("MODELSCOPE_ENDPOINT") or env.get("MODELSCOPE_DOMAIN")
        return cls(
            hf_endpoint=_url(env.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT),
            hf_token=hf_token or env.get("HUGGING_FACE_HUB_TOKEN") or None,
            modelscope_endpoint=_url(modelscope or DEFAULT_MODELSCOPE_ENDPOINT),
            modelscope_token=env.get("MODELSCOPE_API_TOKEN") or None,
            ollama_base_url=_url(ollama or DEFAULT_OLLAMA_BASE_URL),
            environ={k: v for k, v in env.items() if k.lower().endswith("_proxy")},
        )


def _url(value: str) -> str:
    value = value.strip().rstrip("/")
    return value if value.startswith(("http://", "https://")) else "https://" + value


@dataclass(frozen=True)
class RemoteFile:
    """One file a deployment needs: where it is, its size and checksum when the hub says."""

    name: str  # path inside the model's folder, "/"-separated
    url: str
    size: int | None = None
    sha256: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # authorization


@dataclass(frozen=True)
class FileSet:
    """What a worker downloads for a model: its files, and which of them the engine is pointed at."""

    files: tuple[RemoteFile, ...]
    main: str  # the file (GGUF) or "" (the folder itself, for safetensors) the engine loads
    # Extra engine parameters the source brings (the Ollama library's sampling defaults, a chat template
    # written next to the model as `extra_files`).
    parameters: tuple[str, ...] = ()
    extra_files: Mapping[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size or 0 for f in self.files)


class ModelReader(Protocol):
    """A model's headers, wherever its files are: what the backends' estimates read (blocking I/O)."""

    where: str

    def gguf_shards(self) -> list[GGUFHeader]:
        """The header of every shard of the GGUF model, in order."""

    def projector(self, mmproj: str | None, no_mmproj: bool) -> GGUFHeader | None:
        """The multimodal projector the model runs with, if any."""

    def safetensors(self) -> ModelFiles:
        """config.json and the tensor tables of a safetensors model."""

    def weights_bytes(self) -> int:
        """The bytes of the model's weight files."""


class ModelSource(Protocol):
    """One place models come from. Implementations are stateless; the registry holds one of each."""

    name: str
    fields: tuple[str, ...]  # the spec's fields this source reads; the others must be unset

    def check(self, spec: ModelSpec) -> None:
        """Raise ValueError, saying what to change, unless the source's fields are complete and valid."""

    def describe(self, spec: ModelSpec) -> str:
        """The model's origin in words: 'huggingface Qwen/Qwen2.5-0.5B-Instruct-GGUF *q4_k_m.gguf'."""

    def model_format(self, spec: ModelSpec) -> ModelFormat:
        """What kind of files the spec names, as far as its fields tell without any I/O."""

    def cache_key(self, spec: ModelSpec) -> str | None:
        """Names one copy of the files on a worker; None when nothing is downloaded (a local path)."""

    def reader(self, spec: ModelSpec, settings: SourceSettings) -> ModelReader:
        """Reads the model's headers without downloading it."""

    def file_set(self, spec: ModelSpec, settings: SourceSettings, backend: str) -> FileSet:
        """The files a worker downloads for `backend` (blocking: lists the repository)."""
