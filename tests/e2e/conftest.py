"""Lets e2e fixtures see whether the test failed, to print the processes' logs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.safetensors_model import (  # noqa: F401 (fixtures for the vLLM tests)
    minilm_embedding,
    smollm2_safetensors,
    tiny_llama_safetensors,
    vllm_env_python,
)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
