"""Which files a deployment downloads: the GGUF a pattern names with its shards and projector, or what an
engine loads from a safetensors repository; the model spec's source fields; the Ollama library's layers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpustack.schemas.models import ModelCreate
from gpustack.sources.base import SourceError
from gpustack.sources.ollama_library import parse_name, sampling_parameters
from gpustack.sources.selection import choose_projector, engine_files, gguf_files

GGUF_REPO = [
    "README.md",
    "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
    "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
    "qwen2.5-7b-instruct-q8_0.gguf",
    "qwen2.5-7b-instruct-fp16.gguf",
    "mmproj-qwen2.5-7b-f16.gguf",
    "mmproj-qwen2.5-7b-q8_0.gguf",
]


def test_a_pattern_takes_every_shard_and_the_projector() -> None:
    main, files = gguf_files(GGUF_REPO, "*Q4_K_M*.gguf", "repo")
    assert main == "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf"
    assert files == [
        "qwen2.5-7b-instruct-q4_k_m-00001-of-00002.gguf",
        "qwen2.5-7b-instruct-q4_k_m-00002-of-00002.gguf",
        "mmproj-qwen2.5-7b-f16.gguf",  # of two projectors, the F16 one
    ]
    assert (
        gguf_files(GGUF_REPO, "qwen2.5-7b-instruct-q8_0.gguf", "repo")[0] == "qwen2.5-7b-instruct-q8_0.gguf"
    )


def test_a_pattern_that_matches_nothing_or_several_models_says_what_the_repository_holds() -> None:
    with pytest.raises(SourceError, match=r"repo: no file matches '\*Q2_K\.gguf'; it holds .*q8_0.gguf"):
        gguf_files(GGUF_REPO, "*Q2_K.gguf", "repo")
    with pytest.raises(SourceError, match=r"several models \(.*fp16.gguf, .*q8_0.gguf\); name one"):
        gguf_files(GGUF_REPO, "*instruct-[fq]*.gguf", "repo")
    with pytest.raises(SourceError, match="missing .*00002-of-00002.gguf"):
        gguf_files(GGUF_REPO[:2], "*q4_k_m*", "repo")


def test_a_projector_goes_with_models_in_its_own_folder_only() -> None:
    assert choose_projector(["a/m.gguf", "b/mmproj-x.gguf"], "a/m.gguf") is None
    assert choose_projector(["a/m.gguf", "a/mmproj-x.gguf"], "a/m.gguf") == "a/mmproj-x.gguf"


def test_a_safetensors_repository_downloads_what_the_engine_loads() -> None:
    names = [
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "merges.txt", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "pytorch_model.bin", "original/consolidated.00.pth",
        "onnx/model.onnx", "model.gguf", ".gitattributes", "README.md", "consolidated.safetensors",
        "figures/chart.png",
    ]  # fmt: skip
    assert engine_files(names, "repo") == [
        "config.json", "generation_config.json", "merges.txt", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip
    assert engine_files(["config.json", "pytorch_model.bin"], "repo") == ["config.json", "pytorch_model.bin"]
    with pytest.raises(SourceError, match="no \\*.safetensors weights .*name the .gguf file"):
        engine_files(["config.json", "model-q4.gguf"], "repo")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "huggingface"}, "huggingface_repo_id is required"),
        ({"source": "huggingface", "huggingface_repo_id": "no-owner"}, "must be <owner>/<name>"),
        (
            {"source": "huggingface", "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct"},
            "the llama-box backend runs a .gguf file: set huggingface_filename",
        ),
        (
            {"source": "huggingface", "huggingface_repo_id": "a/b", "local_path": "/m.gguf"},
            "local_path does not apply to source huggingface",
        ),
        ({"source": "ollama_library", "ollama_library_model_name": "Qwen 2.5"}, "[namespace/]model[:tag]"),
        (
            {
                "source": "modelscope",
                "model_scope_model_id": "a/b",
                "model_scope_file_path": "m.gguf",
                "backend": "vllm",
            },
            "the vllm backend loads a safetensors repository",
        ),
    ],
)
def test_a_model_with_incomplete_or_foreign_source_fields_is_refused_saying_what_to_change(
    fields: dict, message: str
) -> None:
    with pytest.raises(
        ValidationError, match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")
    ):
        ModelCreate.model_validate({"name": "m", **fields})


def test_upstreams_fields_make_a_model() -> None:
    model = ModelCreate.model_validate(
        {
            "name": "q",
            "source": "huggingface",
            "huggingface_repo_id": "Qwen/X-GGUF",
            "huggingface_filename": "*q4*",
        }
    )
    assert model.huggingface_filename == "*q4*"
    ModelCreate.model_validate(
        {"name": "o", "source": "ollama_library", "ollama_library_model_name": "qwen2.5:0.5b"}
    )
    ModelCreate.model_validate(
        {"name": "v", "source": "modelscope", "model_scope_model_id": "Qwen/X", "backend": "vllm"}
    )


def test_ollama_names_and_parameters() -> None:
    assert parse_name("qwen2.5:0.5b") == ("library", "qwen2.5", "0.5b")
    assert parse_name("llama3.2") == ("library", "llama3.2", "latest")
    assert parse_name("someone/model:q4") == ("someone", "model", "q4")
    params = {
        "temperature": 0.7,
        "top_k": 40,
        "stop": ["<|end|>"],
        "num_ctx": 4096,
        "seed": 42,
        "mirostat": True,
    }
    assert sampling_parameters(params) == ("--temp", "0.7", "--top-k", "40", "--seed", "42")


def test_one_repository_read_whole_or_in_part_is_two_copies_in_one_folder() -> None:
    from gpustack.schemas.models import ModelSpec
    from gpustack.sources.registry import source_of
    from gpustack.worker.files.cache import folder_of

    def key(backend: str) -> str:
        spec = ModelSpec.model_validate(
            {"source": "huggingface", "huggingface_repo_id": "a/b", "backend": backend}
        )
        return source_of(spec.source).cache_key(spec) or ""

    assert key("vllm") == "huggingface/a/b/" and key("vox-box") == "huggingface/a/b/*"
    assert folder_of("/c", key("vllm")) == folder_of("/c", key("vox-box"))
