"""The gateway's meter: tokens read from a relayed body without buffering it, in-flight counts that return
to zero, failures by reason, and no series named after a model that does not exist."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from starlette.responses import StreamingResponse

from gpustack.metrics.gateway import BROKE_OFF, GatewayMetrics, Usage, find_usage


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_usage_is_found_at_the_end_of_a_json_body() -> None:
    body = json.dumps(
        {"choices": [{"text": "x" * 20000}], "usage": {"prompt_tokens": 31, "completion_tokens": 5}}
    ).encode()
    assert find_usage(body[:4096], body[-8192:]) == Usage(31, 5)


def test_usage_with_nested_details_as_llama_cpp_answers_is_found() -> None:
    body = (
        b'{"choices":[],"object":"chat.completion","usage":{"completion_tokens":5,"prompt_tokens":31,'
        b'"total_tokens":36,"prompt_tokens_details":{"cached_tokens":0}},"id":"x","timings":{"prompt_n":31}}'
    )
    assert find_usage(body[:4096], body[-8192:]) == Usage(31, 5)


def test_usage_is_found_at_the_start_of_an_embeddings_body() -> None:
    body = (
        b'{"model":"m","object":"list","usage":{"prompt_tokens":7,"total_tokens":7},"data":['
        + b"0.1," * 10000
        + b"0.1]}"
    )
    assert find_usage(body[:4096], body[-8192:]) == Usage(7, None)


def test_usage_of_a_stream_is_its_last_event() -> None:
    events = [b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'] * 50
    events.append(b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}\n\n')
    events.append(b"data: [DONE]\n\n")
    stream = b"".join(events)
    assert find_usage(stream[:4096], stream[-8192:]) == Usage(3, 9)


def test_a_body_without_usage_reports_none() -> None:
    assert find_usage(b'{"data": []}', b'{"data": []}') is None


async def _body(chunks: list[bytes], fail: bool = False) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk
    if fail:
        raise RuntimeError("engine died")


async def _drain(response: StreamingResponse) -> bytes:
    received = b""
    async for chunk in response.body_iterator:
        received += chunk if isinstance(chunk, bytes) else str(chunk).encode()
    return received


async def test_a_relayed_response_counts_tokens_latency_and_leaves_nothing_in_flight() -> None:
    registry = CollectorRegistry()
    meter = GatewayMetrics(registry)
    body = [
        b'{"choices":[{"message":{"content":"Hello"}}],',
        b'"usage":{"prompt_tokens":31,"completion_tokens":5}}',
    ]
    response = meter.relayed(
        StreamingResponse(_body(body), media_type="application/json"), "m", "m-1", "chat/completions",
        time.perf_counter(),
    )  # fmt: skip
    labels = {"model": "m", "model_instance": "m-1"}
    assert _value(registry, "gpustack_gateway_requests_in_flight", **labels) == 1
    assert await _drain(response) == b"".join(body)  # relayed unchanged
    assert _value(registry, "gpustack_gateway_requests_in_flight", **labels) == 0
    assert _value(registry, "gpustack_gateway_tokens_total", **labels, kind="prompt") == 31
    assert _value(registry, "gpustack_gateway_tokens_total", **labels, kind="completion") == 5
    assert _value(registry, "gpustack_gateway_request_duration_seconds_count", **labels) == 1
    assert _value(registry, "gpustack_gateway_time_to_first_chunk_seconds_count", **labels) == 1
    assert (
        _value(registry, "gpustack_gateway_requests_total", **labels, route="chat/completions", code="200")
        == 1
    )


async def test_an_engine_that_stops_mid_body_is_an_error_and_leaves_nothing_in_flight() -> None:
    registry = CollectorRegistry()
    meter = GatewayMetrics(registry)
    response = meter.relayed(
        StreamingResponse(_body([b"partial"], fail=True)), "m", "m-1", "completions", time.perf_counter()
    )
    with pytest.raises(RuntimeError):
        await _drain(response)
    labels = {"model": "m", "model_instance": "m-1"}
    assert _value(registry, "gpustack_gateway_requests_in_flight", **labels) == 0
    assert _value(registry, "gpustack_gateway_errors_total", **labels, reason=BROKE_OFF) == 1


async def test_an_engine_5xx_is_counted_as_an_engine_error_without_reading_its_tokens() -> None:
    registry = CollectorRegistry()
    meter = GatewayMetrics(registry)
    body = [b'{"error": "x", "usage": {"prompt_tokens": 4}}']
    response = meter.relayed(
        StreamingResponse(_body(body), status_code=500), "m", "m-1", "completions", time.perf_counter()
    )
    await _drain(response)
    labels = {"model": "m", "model_instance": "m-1"}
    assert _value(registry, "gpustack_gateway_errors_total", **labels, reason="engine_error") == 1
    assert _value(registry, "gpustack_gateway_tokens_total", **labels, kind="prompt") == 0
