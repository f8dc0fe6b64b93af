"""ModelScope: `model_scope_model_id` and, for GGUF repositories, `model_scope_file_path` (a name or a
pattern), through ModelScope's HTTP API; MODELSCOPE_DOMAIN (or MODELSCOPE_ENDPOINT) moves the endpoint
and MODELSCOPE_API_TOKEN opens private repositories."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from gpustack.sources.base import FileSet, ModelFormat, ModelReader, RemoteFile, SourceError, SourceSettings
from gpustack.sources.http import read_json, sync_client, unreachable
from gpustack.sources.huggingface import check_repo_id, select, selection_label
from gpustack.sources.remote_reader import LazyReader, RemoteReader, repo_reader

if TYPE_CHECKING:
    from gpustack.schemas.models import ModelSpec

REVISION = "master"
TOKEN_HINT = "a token (MODELSCOPE_API_TOKEN)"
ENDPOINT_HINT = "MODELSCOPE_DOMAIN"


def _where(repo: str) -> str:
    return f"modelscope {repo}"


def file_url(endpoint: str, repo: str, path: str) -> str:
    return f"{endpoint}/api/v1/models/{repo}/repo?Revision={REVISION}&FilePath={quote(path, safe='')}"


def list_repo(repo: str, settings: SourceSettings) -> dict[str, RemoteFile]:
    where = _where(repo)
    endpoint = settings.modelscope_endpoint
    url = f"{endpoint}/api/v1/models/{repo}/repo/files?Revision={REVISION}&Recursive=true"
    headers = {"Authorization": f"Bearer {settings.modelscope_token}"} if settings.modelscope_token else {}
    with sync_client(settings.environ) as client:
        try:
            with client.stream("GET", url, headers=headers) as response:
                body: Any = read_json(response, where) if response.status_code < 500 else None
                status = response.status_code
        except httpx.HTTPError as exc:
            raise unreachable(where, url, exc, settings.environ, ENDPOINT_HINT) from None
    data = body.get("Data") if isinstance(body, dict) else None
    if status in (401, 403):
        raise SourceError(f"access denied to {where} (HTTP {status}): it is private; give {TOKEN_HINT}")
    if status == 404 or (isinstance(body, dict) and body.get("Code") not in (None, 200)) or data is None:
        message = body.get("Message") if isinstance(body, dict) else f"HTTP {status}"
        raise SourceError(
            f"{where}: no such model on {endpoint} ({message}); check the id (owner/name), and for a private "
            f"model give {TOKEN_HINT}"
        )
    files: dict[str, RemoteFile] = {}
    for entry in data.get("Files") or []:
        if isinstance(entry, dict) and entry.get("Type", "blob") == "blob" and entry.get("Path"):
            path = str(entry["Path"])
            size = entry.get("Size")
            sha = entry.get("Sha256")
            files[path] = RemoteFile(
                path,
                file_url(endpoint, repo, path),
                int(size) if isinstance(size, int) else None,
                str(sha).lower() if isinstance(sha, str) and len(sha) == 64 else None,
                headers,
            )
    return files


def _reader(spec: ModelSpec, settings: SourceSettings) -> RemoteReader:
    repo = spec.model_scope_model_id or ""
    files = list_repo(repo, settings)
    return repo_reader(_where(repo), files, spec.model_scope_file_path, settings, TOKEN_HINT, ENDPOINT_HINT)


class ModelScope:
    name = "modelscope"
    fields: tuple[str, ...] = ("model_scope_model_id", "model_scope_file_path")

    def check(self, spec: ModelSpec) -> None:
        if not spec.model_scope_model_id:
            raise ValueError(
                "model_scope_model_id is required when source is modelscope, such as "
                "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
            )
        check_repo_id(spec.model_scope_model_id, "model_scope_model_id")

    def describe(self, spec: ModelSpec) -> str:
        extra = [spec.model_scope_file_path] if spec.model_scope_file_path else []
        return " ".join([self.name, spec.model_scope_model_id or "", *extra])

    def model_format(self, spec: ModelSpec) -> ModelFormat:
        name = (spec.model_scope_file_path or "").lower()
        if not name:
            return "safetensors"
        return "gguf" if name.endswith((".gguf", "*")) else "unknown"

    def cache_key(self, spec: ModelSpec) -> str | None:
        return f"modelscope/{spec.model_scope_model_id}/{selection_label(spec.model_scope_file_path, spec)}"

    def reader(self, spec: ModelSpec, settings: SourceSettings) -> ModelReader:
        return LazyReader(_where(spec.model_scope_model_id or ""), lambda: _reader(spec, settings))

    def file_set(self, spec: ModelSpec, settings: SourceSettings, backend: str) -> FileSet:
        repo = spec.model_scope_model_id or ""
        return select(list_repo(repo, settings), spec.model_scope_file_path, _where(repo), backend)


SOURCE = ModelScope()
