"""Engine metrics passed through: relabeled with the worker, model and instance, merged across engines,
and rendered so that Prometheus' own parser reads them back (recorded from llama.cpp's server)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gpustack.metrics.engines import Families, merge, relabel

RECORDED = (Path(__file__).parent / "fixtures" / "llama_server_metrics.txt").read_text()


def _families(text: str) -> list:
    return list(text_string_to_metric_families(text))


def test_two_engines_share_one_family_per_name_each_with_its_own_labels() -> None:
    first = relabel(_families(RECORDED), {"worker": "w", "model": "a", "model_instance": "a-1"})
    second = relabel(_families(RECORDED), {"worker": "w", "model": "b", "model_instance": "b-1"})
    rendered = generate_latest(Families(merge([first, second]))).decode()
    parsed = {family.name: family for family in _families(rendered)}
    assert rendered.count("# TYPE llamacpp:prompt_tokens_total counter") == 1
    samples = parsed["llamacpp:prompt_tokens"].samples
    assert {s.labels["model_instance"] for s in samples} == {"a-1", "b-1"}
    assert all(s.labels["worker"] == "w" for s in samples)
    assert "llamacpp:requests_processing" in parsed


def test_an_engine_label_that_clashes_with_ours_is_kept_under_another_name() -> None:
    text = '# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model="/models/x"} 2\n'
    (family,) = relabel(_families(text), {"worker": "w", "model": "x", "model_instance": "x-1"})
    assert family.samples[0].labels == {
        "engine_model": "/models/x",
        "worker": "w",
        "model": "x",
        "model_instance": "x-1",
    }


def test_a_family_whose_type_differs_between_engines_keeps_the_first_engines() -> None:
    gauge = relabel(_families("# TYPE m gauge\nm 1\n"), {"model_instance": "a"})
    counter = relabel(_families("# TYPE m_total counter\nm_total 1\n"), {"model_instance": "b"})
    (merged,) = merge([gauge, counter])
    assert merged.type == "gauge" and len(merged.samples) == 1
