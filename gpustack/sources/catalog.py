"""The model catalog: popular models with the sources, backends and parameters they deploy with, so that a
model is two clicks away. Built in (catalog.yaml beside this module) or replaced by --model-catalog-file."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gpustack.schemas.models import BackendEnum, BackendParameters, LocalPath, SourceEnum, SourceText

BUILTIN = Path(__file__).with_name("catalog.yaml")


class CatalogError(ValueError):
    """The catalog file cannot be used; the message names the file and the entry."""


class CatalogVariant(BaseModel):
    """One way to deploy the model: a source, a backend and what to pass it (POST /v2/models takes these
    fields as they are, with a name)."""

    source: SourceEnum
    local_path: LocalPath | None = None
    huggingface_repo_id: SourceText | None = None
    huggingface_filename: SourceText | None = None
    model_scope_model_id: SourceText | None = None
    model_scope_file_path: SourceText | None = None
    ollama_library_model_name: SourceText | None = None
    backend: BackendEnum = BackendEnum.LLAMA_BOX
    backend_parameters: BackendParameters = Field(default_factory=list)
    quantization: str | None = Field(default=None, max_length=64)
    size: str | None = Field(default=None, max_length=64)  # "0.5B"
    file_size: int | None = Field(default=None, ge=0)  # bytes to download, when known

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _check(self) -> CatalogVariant:
        from gpustack.schemas.models import ModelSpec, check_source_fields

        fields = self.model_dump(exclude={"quantization", "size", "file_size"})
        check_source_fields(ModelSpec.model_validate(fields))
        return self


class CatalogEntry(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=2000)
    categories: list[str] = Field(default_factory=list)  # llm, embedding, reranker, speech ...
    home: str | None = Field(default=None, max_length=500)
    variants: list[CatalogVariant] = Field(min_length=1)

    model_config = ConfigDict(extra="forbid")


class Catalog(BaseModel):
    items: list[CatalogEntry]


_cache: dict[tuple[str, float], Catalog] = {}


def load_catalog(path: str | None = None) -> Catalog:
    """The catalog at `path` (the built-in one when None), read again when the file changes."""
    file = Path(path) if path else BUILTIN
    try:
        key = (str(file), file.stat().st_mtime)
    except OSError as exc:
        raise CatalogError(f"--model-catalog-file: cannot read {file}: {exc.strerror or exc}") from None
    found = _cache.get(key)
    if found is not None:
        return found
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogError(f"{file} is not a readable YAML file: {exc}") from None
    if not isinstance(content, list):
        raise CatalogError(f"{file} must hold a list of models (name, description, variants)")
    try:
        catalog = Catalog(items=[CatalogEntry.model_validate(item) for item in content])
    except ValidationError as exc:
        raise CatalogError(f"{file}: {exc}") from None
    _cache.clear()
    _cache[key] = catalog
    return catalog
