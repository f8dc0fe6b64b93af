"""Every model source by name: the one place that knows which exist. Adding one is a module plus a line."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gpustack.sources import huggingface, local_path, modelscope, ollama_library
from gpustack.sources.base import ModelSource

if TYPE_CHECKING:
    from gpustack.schemas.models import ModelSpec

SOURCES: dict[str, ModelSource] = {
    source.name: source
    for source in (local_path.SOURCE, huggingface.SOURCE, modelscope.SOURCE, ollama_library.SOURCE)
}
# Every field any source reads: a spec sets only its own source's.
SOURCE_FIELDS: tuple[str, ...] = tuple(f for source in SOURCES.values() for f in source.fields)


def source_of(name: str | Any) -> ModelSource:
    key = getattr(name, "value", name)
    found = SOURCES.get(key)
    if found is None:
        raise ValueError(f"unknown source {key!r}; use one of {', '.join(SOURCES)}")
    return found


def check_source(spec: ModelSpec) -> ModelSource:
    """The spec's source, once its own fields are complete and no other source's field is set."""
    source = source_of(spec.source)
    foreign = [f for f in SOURCE_FIELDS if f not in source.fields and getattr(spec, f, None)]
    if foreign:
        verb = "does" if len(foreign) == 1 else "do"
        raise ValueError(
            f"{', '.join(foreign)} {verb} not apply to source {source.name}; it reads "
            f"{', '.join(source.fields)} (remove the others, or change source)"
        )
    source.check(spec)
    return source
