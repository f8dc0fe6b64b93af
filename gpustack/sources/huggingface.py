"""Hugging Face: `huggingface_repo_id` and, for GGUF repositories, `huggingface_filename` (a name or a
pattern such as `*Q4_K_M.gguf`), read through huggingface_hub itself: HF_ENDPOINT (the FAQ's mirror),
HF_TOKEN or --huggingface-token, and the proxy variables."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpustack.sources.base import FileSet, ModelFormat, ModelReader, RemoteFile, SourceError, SourceSettings
from gpustack.sources.proxies import routing_transport
from gpustack.sources.remote_reader import LazyReader, RemoteReader, repo_reader
from gpustack.sources.selection import choose_projector, engine_files, gguf_files

if TYPE_CHECKING:
    from gpustack.schemas.models import ModelSpec

REVISION = "main"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
TOKEN_HINT = "a token (HF_TOKEN, or gpustack start --huggingface-token)"
ENDPOINT_HINT = "HF_ENDPOINT (a mirror such as https://hf-mirror.com)"
# Engines whose files are a GGUF; the others load a transformers-style folder.
GGUF_BACKENDS = frozenset({"llama-box"})
# Engines that read a repository in their own layout: everything is downloaded.
WHOLE_REPO_BACKENDS = frozenset({"vox-box", "custom"})

_client_lock = threading.Lock()
_client_environ: dict[str, str] | None = None


def check_repo_id(value: str, field: str) -> str:
    if not _REPO_ID.match(value):
        raise ValueError(f"{field} must be <owner>/<name>, such as Qwen/Qwen2.5-0.5B-Instruct; got {value!r}")
    return value


def use_proxies(environ: Mapping[str, str]) -> None:
    """huggingface_hub's shared client sends each request as proxy_for decides (CIDRs in NO_PROXY)."""
    global _client_environ
    from huggingface_hub import close_session, set_client_factory
    from huggingface_hub.utils._http import hf_request_event_hook

    try:  # huggingface_hub 2 speaks httpx2; version 1 speaks httpx
        import httpx2 as http_module
    except ImportError:
        import httpx as http_module  # type: ignore[no-redef]
    wanted = dict(environ)
    with _client_lock:
        if _client_environ == wanted:
            return

        def factory() -> Any:
            return http_module.Client(
                event_hooks={"request": [hf_request_event_hook]},
                follow_redirects=True,
                timeout=None,
                trust_env=False,
                transport=routing_transport(http_module, wanted, asynchronous=False),
            )

        set_client_factory(factory)
        close_session()
        _client_environ = wanted


def _where(repo: str) -> str:
    return f"huggingface {repo}"


def list_repo(repo: str, settings: SourceSettings) -> tuple[str, dict[str, RemoteFile]]:
    """(commit, name → file with its size and LFS sha256) of a repository at REVISION."""
    from huggingface_hub import HfApi, hf_hub_url
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    use_proxies(settings.environ)
    where = _where(repo)
    api = HfApi(endpoint=settings.hf_endpoint, token=settings.hf_token or False)
    try:
        info = api.model_info(repo, revision=REVISION, files_metadata=True, timeout=30)
    except GatedRepoError:
        raise SourceError(
            f"{where} is gated: accept its conditions on {settings.hf_endpoint}/{repo} with an account, "
            f"and give {TOKEN_HINT} of that account"
        ) from None
    except RepositoryNotFoundError:
        if settings.hf_token:
            raise SourceError(
                f"{where}: no such repository on {settings.hf_endpoint}, or the token given has no access "
                "to it; check the name (owner/name)"
            ) from None
        raise SourceError(
            f"{where}: no such repository on {settings.hf_endpoint}, or it is private or gated; check the "
            f"name (owner/name), and for a private repository give {TOKEN_HINT}"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"{where} has no revision {REVISION!r}") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise SourceError(f"{where}: {settings.hf_endpoint} answered HTTP {status}") from None
    except Exception as exc:  # noqa: BLE001 - the transport's errors (httpx2) name the failure
        raise SourceError(
            f"{where}: cannot reach {settings.hf_endpoint} ({type(exc).__name__}: {exc}); check the "
            f"network, the proxy variables (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) or {ENDPOINT_HINT}"
        ) from None
    commit = info.sha or REVISION
    headers = {"Authorization": f"Bearer {settings.hf_token}"} if settings.hf_token else {}
    files: dict[str, RemoteFile] = {}
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        sha256 = getattr(lfs, "sha256", None) if lfs is not None else None
        size = sibling.size if sibling.size is not None else getattr(lfs, "size", None)
        url = hf_hub_url(repo, sibling.rfilename, revision=commit, endpoint=settings.hf_endpoint)
        files[sibling.rfilename] = RemoteFile(sibling.rfilename, url, size, sha256, headers)
    return commit, files


def _reader(spec: ModelSpec, settings: SourceSettings) -> RemoteReader:
    repo = spec.huggingface_repo_id or ""
    _, files = list_repo(repo, settings)
    return repo_reader(_where(repo), files, spec.huggingface_filename, settings, TOKEN_HINT, ENDPOINT_HINT)


class HuggingFace:
    name = "huggingface"
    fields: tuple[str, ...] = ("huggingface_repo_id", "huggingface_filename")

    def check(self, spec: ModelSpec) -> None:
        if not spec.huggingface_repo_id:
            raise ValueError(
                "huggingface_repo_id is required when source is huggingface, such as "
                "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
            )
        check_repo_id(spec.huggingface_repo_id, "huggingface_repo_id")

    def describe(self, spec: ModelSpec) -> str:
        parts = [self.name, spec.huggingface_repo_id or ""]
        return " ".join(parts + ([spec.huggingface_filename] if spec.huggingface_filename else []))

    def model_format(self, spec: ModelSpec) -> ModelFormat:
        name = (spec.huggingface_filename or "").lower()
        if not name:
            return "safetensors"
        return "gguf" if name.endswith((".gguf", "*")) else "unknown"

    def cache_key(self, spec: ModelSpec) -> str | None:
        return f"huggingface/{spec.huggingface_repo_id}/{selection_label(spec.huggingface_filename, spec)}"

    def reader(self, spec: ModelSpec, settings: SourceSettings) -> ModelReader:
        return LazyReader(_where(spec.huggingface_repo_id or ""), lambda: _reader(spec, settings))

    def file_set(self, spec: ModelSpec, settings: SourceSettings, backend: str) -> FileSet:
        repo = spec.huggingface_repo_id or ""
        _, files = list_repo(repo, settings)
        return select(files, spec.huggingface_filename, _where(repo), backend)


def selection_label(pattern: str | None, spec: ModelSpec) -> str:
    """The last part of a cache key: the file pattern, or which of a repository's files an engine loads
    ("" what transformers-style engines load, "*" everything for engines with their own layout)."""
    if pattern:
        return pattern
    return "*" if getattr(spec.backend, "value", spec.backend) in WHOLE_REPO_BACKENDS else ""


def select(files: dict[str, RemoteFile], pattern: str | None, where: str, backend: str) -> FileSet:
    """The files `backend` needs from a listed repository (shared with ModelScope)."""
    names = list(files)
    if pattern or backend in GGUF_BACKENDS:
        if not pattern:
            raise SourceError(f"{where}: the {backend} backend runs a .gguf file; name it (or a pattern)")
        main, wanted = gguf_files(names, pattern, where)
        parameters: tuple[str, ...] = ()
        projector = choose_projector(names, main)
        if projector is not None:
            parameters = ("--mmproj", projector)  # the worker makes it the downloaded file's path
        return FileSet(tuple(files[n] for n in wanted), main=main, parameters=parameters)
    wanted = engine_files(names, where, everything=backend in WHOLE_REPO_BACKENDS)
    return FileSet(tuple(files[n] for n in wanted), main="")


SOURCE = HuggingFace()
