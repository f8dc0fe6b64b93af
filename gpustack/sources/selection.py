"""Which of a repository's files a deployment needs: the GGUF a pattern names with its shards and
projector, or what an engine loads from a safetensors repository. Pure: names in, names out."""

from __future__ import annotations

import fnmatch
import posixpath
import re

from gpustack.estimate.gguf_mmproj import MMPROJ_PREFIX
from gpustack.sources.base import SourceError

_SHARD = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
# What transformers-style engines read besides the weights: configs, tokenizers, templates, code.
_SUPPORT_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py", ".spm", ".vocab")
_SKIPPED_FOLDERS = ("original/", "onnx/", "openvino/", "coreml/", "gguf/", ".")


def is_projector(name: str) -> bool:
    return posixpath.basename(name).lower().startswith(MMPROJ_PREFIX) and name.lower().endswith(".gguf")


def matches(name: str, pattern: str) -> bool:
    """A file name against a user's pattern: the whole path or the base name, case-insensitively."""
    pattern = pattern.lower()
    lowered = name.lower()
    return fnmatch.fnmatchcase(lowered, pattern) or fnmatch.fnmatchcase(posixpath.basename(lowered), pattern)


def choose_projector(names: list[str], model: str) -> str | None:
    """The projector that goes with a model: the only mmproj*.gguf beside it, else an F16 one, else the
    first by name (repositories often ship F16 and Q8_0 projectors)."""
    folder = posixpath.dirname(model)
    found = sorted(n for n in names if posixpath.dirname(n) == folder and is_projector(n))
    if len(found) <= 1:
        return found[0] if found else None
    f16 = [n for n in found if "f16" in posixpath.basename(n).lower()]
    return (f16 or found)[0]


def shards_of(names: list[str], first: str) -> list[str]:
    """Every shard of a split GGUF model, in order, from its first; SourceError when one is missing."""
    match = _SHARD.match(posixpath.basename(first))
    if match is None:
        return [first]
    folder = posixpath.dirname(first)
    count = int(match["count"])
    wanted = [
        posixpath.join(folder, f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    have = {n.lower(): n for n in names}
    missing = [w for w in wanted if w.lower() not in have]
    if missing:
        raise SourceError(f"the split model {first} is missing {', '.join(missing)}")
    return [have[w.lower()] for w in wanted]


def select_gguf(names: list[str], pattern: str, where: str) -> str:
    """The GGUF model file a name or pattern means: its first shard when split; SourceError saying what
    the repository holds when nothing or several models match."""
    candidates = sorted(n for n in names if n.lower().endswith(".gguf") and matches(n, pattern))
    if not any(is_projector(p) for p in [pattern]):
        candidates = [n for n in candidates if not is_projector(n)]
    models: dict[str, str] = {}
    for name in candidates:
        match = _SHARD.match(posixpath.basename(name))
        if match is None:
            models[name] = name
        else:
            stem = posixpath.join(posixpath.dirname(name), match["stem"])
            first = posixpath.join(posixpath.dirname(name), f"{match['stem']}-00001-of-{match['count']}.gguf")
            models.setdefault(stem.lower(), first)
    if len(models) == 1:
        return next(iter(models.values()))
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf") and not is_projector(n))
    shown = ", ".join(posixpath.basename(n) for n in ggufs[:12]) + (" ..." if len(ggufs) > 12 else "")
    if not models:
        return_hint = f"it holds {shown}" if ggufs else "it holds no .gguf files"
        raise SourceError(f"{where}: no file matches {pattern!r}; {return_hint}")
    several = ", ".join(posixpath.basename(n) for n in sorted(models.values()))
    raise SourceError(f"{where}: {pattern!r} matches several models ({several}); name one of them")


def gguf_files(names: list[str], pattern: str, where: str) -> tuple[str, list[str]]:
    """(the model file, every file to download: its shards and its projector)."""
    main = select_gguf(names, pattern, where)
    files = shards_of(names, main)
    projector = choose_projector(names, main)
    if projector is not None:
        files.append(projector)
    return main, files


def _skipped(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/")) or name.startswith(_SKIPPED_FOLDERS)


def engine_files(names: list[str], where: str, everything: bool = False) -> list[str]:
    """What an engine loads from a safetensors repository: its configs, tokenizer and weights at the top
    level; PyTorch .bin weights only when there are no safetensors; other formats' copies left out.
    `everything`: the whole repository (for engines whose layout is their own, like speech models)."""
    if everything:
        return sorted(n for n in names if not _skipped(n))
    top = [n for n in names if "/" not in n and not n.startswith(".")]
    safetensors = [n for n in top if n.endswith(".safetensors")]
    if not safetensors:
        weights = [n for n in top if n.endswith(".bin")]
        if not weights:
            raise SourceError(
                f"{where} has no *.safetensors weights at its top level; for a GGUF repository name the "
                ".gguf file (a pattern such as *Q4_K_M.gguf works) and use the llama-box backend"
            )
    else:
        # Mistral's repositories carry consolidated*.safetensors beside the Hugging Face shards: one copy.
        split = [n for n in safetensors if not n.startswith("consolidated")]
        weights = split or safetensors
    support = [
        n for n in top if n.endswith(_SUPPORT_SUFFIXES) and n not in weights and not n.endswith(".bin")
    ]
    if "config.json" not in top:
        raise SourceError(f"{where} has no config.json at its top level; is it a model repository?")
    return sorted(set(weights) | set(support))
