"""The vLLM environment and its test models, for the tests in this folder."""

from tests.fixtures.safetensors_model import (  # noqa: F401 (fixtures)
    minilm_embedding,
    smollm2_safetensors,
    tiny_llama_safetensors,
    vllm_env_python,
)
