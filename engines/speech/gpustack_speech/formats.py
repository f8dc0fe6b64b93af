"""Which engine serves a model folder: hibari voices (served here) or vox-box (every other folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


class ModelFolderError(ValueError):
    """The model folder cannot be served; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class HibariVoice:
    name: str
    file: Path
    language: str
    british: bool


@dataclass(frozen=True)
class HibariModel:
    """A folder with hibari's voices.json and the ONNX file of at least one voice it lists."""

    folder: Path
    voices: tuple[HibariVoice, ...]


def check_folder(model: str) -> Path:
    folder = Path(model)
    if not folder.exists():
        raise ModelFolderError(f"model path {model} does not exist")
    if not folder.is_dir():
        raise ModelFolderError(f"model path {model} is a file; pass the folder that holds the model's files")
    return folder


def hibari_model(folder: Path) -> HibariModel | None:
    """The hibari voices in `folder`, or None when it is not a hibari voice folder.

    hibari (PyPI hibari-tts) keeps a registry, voices.json, of name -> {kokoro, file, language,
    british, ...}; a folder is a hibari model when it has that registry and the files it names.
    """
    registry = folder / "voices.json"
    if not registry.is_file():
        return None
    try:
        entries = json.loads(registry.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{registry} is not readable JSON ({exc})") from exc
    if not isinstance(entries, dict) or not entries:
        return None
    if not all(isinstance(e, dict) and "kokoro" in e and "file" in e for e in entries.values()):
        return None  # another engine's voices.json: not ours
    voices = []
    for name, entry in entries.items():
        path = folder / str(entry["file"])
        if path.is_file():
            voices.append(
                HibariVoice(
                    name=str(name),
                    file=path,
                    language=str(entry.get("language", "en-US")),
                    british=bool(entry.get("british", False)),
                )
            )
    if not voices:
        wanted = ", ".join(f"{name} ({entry['file']})" for name, entry in entries.items())
        raise ModelFolderError(
            f"{registry} lists the voices {wanted}, but none of those files is in {folder}; "
            "copy at least one voice's .onnx file next to voices.json"
        )
    return HibariModel(folder=folder, voices=tuple(voices))
