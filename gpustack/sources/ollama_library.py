"""The Ollama library: `ollama_library_model_name` such as `qwen2.5:0.5b` (or `namespace/model:tag`),
through the registry protocol (a manifest whose layers are blobs addressed by sha256): the model layer
is a GGUF, a projector layer its mmproj, and the params layer becomes the engine's sampling defaults.
The registry is --ollama-library-base-url (default https://registry.ollama.ai)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx

from gpustack.sources.base import FileSet, ModelFormat, ModelReader, RemoteFile, SourceError, SourceSettings
from gpustack.sources.http import read_json, sync_client, unreachable
from gpustack.sources.ollama_template import to_jinja
from gpustack.sources.remote_reader import LazyReader, Listing, RemoteReader

if TYPE_CHECKING:
    from gpustack.schemas.models import ModelSpec

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"
)
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
PARAMS_LAYER = "application/vnd.ollama.image.params"
TEMPLATE_LAYER = "application/vnd.ollama.image.template"
SYSTEM_LAYER = "application/vnd.ollama.image.system"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
MODEL_FILE = "model.gguf"
PROJECTOR_FILE = "mmproj-model.gguf"
_NAME = re.compile(
    r"^(?:(?P<ns>[a-z0-9][a-z0-9._-]{0,63})/)?(?P<model>[a-z0-9][a-z0-9._-]{0,127})"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?$"
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_SMALL_LAYER = 1 << 20
# Ollama's parameters that are llama.cpp server flags; the rest (stop words, num_ctx, which would change
# the memory the scheduler claims) are left to the request or the user's own parameters.
PARAMETER_FLAGS = {
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "typical_p": "--typical",
    "repeat_penalty": "--repeat-penalty",
    "repeat_last_n": "--repeat-last-n",
    "presence_penalty": "--presence-penalty",
    "frequency_penalty": "--frequency-penalty",
    "seed": "--seed",
    "num_predict": "--n-predict",
}


def parse_name(name: str) -> tuple[str, str, str]:
    """(namespace, model, tag) of `[namespace/]model[:tag]`; ValueError saying the form."""
    match = _NAME.match(name.strip())
    if match is None:
        raise ValueError(
            f"ollama_library_model_name must be [namespace/]model[:tag] in lower case, such as qwen2.5:0.5b; "
            f"got {name!r}"
        )
    return match["ns"] or "library", match["model"], match["tag"] or "latest"


def _where(name: str) -> str:
    return f"ollama library {name}"


def manifest(name: str, settings: SourceSettings) -> tuple[str, list[dict[str, Any]]]:
    """(the repository's base URL, the manifest's layers)."""
    namespace, model, tag = parse_name(name)
    base = f"{settings.ollama_base_url}/v2/{namespace}/{model}"
    url = f"{base}/manifests/{tag}"
    where = _where(name)
    with sync_client(settings.environ) as client:
        try:
            with client.stream("GET", url, headers={"Accept": MANIFEST_TYPES}) as response:
                status = response.status_code
                body: Any = read_json(response, where) if status == 200 else None
        except httpx.HTTPError as exc:
            raise unreachable(where, url, exc, settings.environ, "--ollama-library-base-url") from None
    if status == 404:
        raise SourceError(
            f"{where}: no such model or tag in {settings.ollama_base_url}; check the name on "
            "ollama.com/library (for example qwen2.5:0.5b)"
        )
    if status != 200 or not isinstance(body, dict) or not isinstance(body.get("layers"), list):
        raise SourceError(f"{where}: {settings.ollama_base_url} answered HTTP {status} without a manifest")
    layers = [layer for layer in body["layers"] if isinstance(layer, dict)]
    return base, layers


def _file(base: str, layer: dict[str, Any], name: str, where: str) -> RemoteFile:
    digest = str(layer.get("digest", ""))
    if not _DIGEST.match(digest):
        raise SourceError(f"{where}: the manifest's layer {layer.get('mediaType')} has no sha256 digest")
    size = layer.get("size")
    known = int(size) if isinstance(size, int) else None
    return RemoteFile(name, f"{base}/blobs/{digest}", known, digest.removeprefix("sha256:"))


def _layer(layers: list[dict[str, Any]], media_type: str) -> dict[str, Any] | None:
    return next((layer for layer in layers if layer.get("mediaType") == media_type), None)


def _small_blob(file: RemoteFile, settings: SourceSettings, where: str) -> bytes:
    if file.size is not None and file.size > _SMALL_LAYER:
        raise SourceError(f"{where}: the {file.name} layer is {file.size} bytes, not a small text layer")
    with sync_client(settings.environ) as client:
        try:
            response = client.get(file.url)
        except httpx.HTTPError as exc:
            raise unreachable(where, file.url, exc, settings.environ, "--ollama-library-base-url") from None
    if response.status_code != 200:
        raise SourceError(f"{where}: the {file.name} layer answered HTTP {response.status_code}")
    return response.content[:_SMALL_LAYER]


def sampling_parameters(params: dict[str, Any]) -> tuple[str, ...]:
    """The params layer as llama.cpp server flags."""
    out: list[str] = []
    for key, flag in PARAMETER_FLAGS.items():
        value = params.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return tuple(out)


class _Reader(LazyReader):
    def __init__(self, spec: ModelSpec, settings: SourceSettings) -> None:
        self.name = spec.ollama_library_model_name or ""
        self.settings = settings
        super().__init__(_where(self.name), self._read_manifest)

    def _read_manifest(self) -> RemoteReader:
        base, layers = manifest(self.name, self.settings)
        files = {}
        for media_type, name in ((MODEL_LAYER, MODEL_FILE), (PROJECTOR_LAYER, PROJECTOR_FILE)):
            layer = _layer(layers, media_type)
            if layer is not None:
                files[name] = _file(base, layer, name, self.where)
        if MODEL_FILE not in files:
            raise SourceError(f"{self.where}: the manifest has no model layer")
        listing = Listing(
            where=self.where,
            urls={n: f.url for n, f in files.items()},
            sizes={n: f.size for n, f in files.items()},
            endpoint_hint="--ollama-library-base-url",
            environ=self.settings.environ,
        )
        return RemoteReader(listing, MODEL_FILE)

    def safetensors(self) -> Any:
        raise SourceError(f"{self.where}: the Ollama library holds GGUF models; use the llama-box backend")


class OllamaLibrary:
    name = "ollama_library"
    fields: tuple[str, ...] = ("ollama_library_model_name",)

    def check(self, spec: ModelSpec) -> None:
        if not spec.ollama_library_model_name:
            raise ValueError(
                "ollama_library_model_name is required when source is ollama_library, such as qwen2.5:0.5b"
            )
        parse_name(spec.ollama_library_model_name)

    def describe(self, spec: ModelSpec) -> str:
        return f"{self.name} {spec.ollama_library_model_name}"

    def model_format(self, spec: ModelSpec) -> ModelFormat:
        return "gguf"

    def cache_key(self, spec: ModelSpec) -> str | None:
        namespace, model, tag = parse_name(spec.ollama_library_model_name or "")
        return f"ollama_library/{namespace}/{model}/{tag}"

    def reader(self, spec: ModelSpec, settings: SourceSettings) -> ModelReader:
        return _Reader(spec, settings)

    def file_set(self, spec: ModelSpec, settings: SourceSettings, backend: str) -> FileSet:
        name = spec.ollama_library_model_name or ""
        where = _where(name)
        base, layers = manifest(name, settings)
        model = _layer(layers, MODEL_LAYER)
        if model is None:
            raise SourceError(f"{where}: the manifest has no model layer")
        files = [_file(base, model, MODEL_FILE, where)]
        parameters: tuple[str, ...] = ()
        projector = _layer(layers, PROJECTOR_LAYER)
        if projector is not None:
            files.append(_file(base, projector, PROJECTOR_FILE, where))
            parameters += ("--mmproj", PROJECTOR_FILE)
        extra: dict[str, str] = {}
        params = _layer(layers, PARAMS_LAYER)
        if params is not None:
            try:
                values = json.loads(_small_blob(_file(base, params, "params", where), settings, where))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise SourceError(f"{where}: the params layer is not JSON") from None
            if isinstance(values, dict):
                parameters += sampling_parameters(values)
                extra["ollama-params.json"] = json.dumps(values, indent=2)
        system = ""
        system_layer = _layer(layers, SYSTEM_LAYER)
        if system_layer is not None:
            system = _small_blob(_file(base, system_layer, "system", where), settings, where).decode(
                errors="replace"
            )
        template = _layer(layers, TEMPLATE_LAYER)
        if template is not None:
            text = _small_blob(_file(base, template, "template", where), settings, where).decode(
                errors="replace"
            )
            extra["ollama-template.txt"] = text
            jinja = to_jinja(text, system)
            if jinja is not None:  # else the template inside the GGUF, llama.cpp's default
                extra[CHAT_TEMPLATE_FILE] = jinja
                parameters += ("--chat-template-file", CHAT_TEMPLATE_FILE)
        return FileSet(tuple(files), main=MODEL_FILE, parameters=parameters, extra_files=extra)


SOURCE = OllamaLibrary()
