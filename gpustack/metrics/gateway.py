"""What the gateway measures per request: count, latency, first chunk, tokens, in flight and errors,
by model and model instance.

Kept cheap because it runs on every request: the label children of each (model, instance) are looked up
once and kept; a response body is watched chunk by chunk as it is relayed (never buffered), keeping only
its first and last few kilobytes, where an OpenAI response carries its `usage`."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.responses import StreamingResponse

# Seconds; from a one-token completion on loopback to a long generation.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
FIRST_CHUNK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_HEAD_BYTES = 4096
_TAIL_BYTES = 8192
# The object may hold one level of nested objects (llama.cpp: "prompt_tokens_details": {...}).
_USAGE_KEY = b'"usage"'
_USAGE = re.compile(rb'"usage"\s*:\s*\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')
_BROKE_OFF = b"upstream_broke_off"  # the error event the relay appends when an engine stops mid-stream

# Why a request failed, as the `reason` label says it.
NO_SUCH_MODEL = "model_not_found"
NO_RUNNING_INSTANCE = "no_running_instance"
UNREACHABLE = "instance_unreachable"
WORKER_REFUSED = "worker_refused"
ENGINE_ERROR = "engine_error"  # the engine answered 5xx
BROKE_OFF = "broke_off"  # the engine stopped in the middle of the body
ALL_UNREACHABLE = "all_instances_unreachable"


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None


def find_usage(head: bytes, tail: bytes) -> Usage | None:
    """The `usage` object of an OpenAI JSON body or event stream, from its first and last bytes.

    Streams carry it in their last event (with stream_options.include_usage); JSON bodies put it last
    or, for some engines' embeddings, first. The innermost-object pattern never parses a whole body."""
    found = None
    # bytes.rfind/find run in C; the pattern is tried only where the key is.
    position = tail.rfind(_USAGE_KEY)
    while position != -1 and found is None:  # the last one: a stream's final event
        match = _USAGE.match(tail, position)
        found = match.group(1) if match else None
        position = tail.rfind(_USAGE_KEY, 0, position)
    position = head.find(_USAGE_KEY) if found is None else -1
    while position != -1 and found is None:
        match = _USAGE.match(head, position)
        found = match.group(1) if match else None
        position = head.find(_USAGE_KEY, position + 1)
    if found is None:
        return None
    prompt = _PROMPT.search(found)
    completion = _COMPLETION.search(found)
    if prompt is None and completion is None:
        return None
    return Usage(int(prompt.group(1)) if prompt else None, int(completion.group(1)) if completion else None)


class _Series:
    """The label children of one (model, model instance): looked up once, used by every request."""

    __slots__ = ("duration", "first_chunk", "in_flight", "prompt_tokens", "completion_tokens")

    def __init__(self, metrics: GatewayMetrics, model: str, instance: str) -> None:
        self.duration = metrics.duration.labels(model, instance)
        self.first_chunk = metrics.first_chunk.labels(model, instance)
        self.in_flight = metrics.in_flight.labels(model, instance)
        self.prompt_tokens = metrics.tokens.labels(model, instance, "prompt")
        self.completion_tokens = metrics.tokens.labels(model, instance, "completion")


class GatewayMetrics:
    """The gateway's metrics, in `registry`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        by_instance = ["model", "model_instance"]
        self.requests = Counter(
            "gpustack_gateway_requests",
            "Requests the OpenAI-compatible gateway answered, by model, model instance, route and HTTP "
            "status (model_instance is empty when no instance was reached).",
            [*by_instance, "route", "code"],
            registry=registry,
        )
        self.duration = Histogram(
            "gpustack_gateway_request_duration_seconds",
            "Time from sending a request to an instance to the end of its relayed response body.",
            by_instance,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.first_chunk = Histogram(
            "gpustack_gateway_time_to_first_chunk_seconds",
            "Time from sending a request to an instance to the first chunk of its response body (the "
            "first token of a stream).",
            by_instance,
            buckets=FIRST_CHUNK_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "gpustack_gateway_requests_in_flight",
            "Requests sent to an instance whose response is still being relayed.",
            by_instance,
            registry=registry,
        )
        self.errors = Counter(
            "gpustack_gateway_errors",
            "Requests that failed, by reason: model_not_found, no_running_instance, instance_unreachable "
            "(another instance was tried), worker_refused, all_instances_unreachable, engine_error (5xx "
            "from the engine), broke_off (the engine stopped mid-response).",
            [*by_instance, "reason"],
            registry=registry,
        )
        self.tokens = Counter(
            "gpustack_gateway_tokens",
            "Tokens of relayed requests, by kind (prompt, completion), when the response reports its "
            "usage (streams do with stream_options.include_usage).",
            [*by_instance, "kind"],
            registry=registry,
        )
        self._series: dict[tuple[str, str], _Series] = {}
        self._request_children: dict[tuple[str, str, str, int], Any] = {}

    def _series_of(self, model: str, instance: str) -> _Series:
        series = self._series.get((model, instance))
        if series is None:
            series = self._series[(model, instance)] = _Series(self, model, instance)
        return series

    def count(self, model: str, instance: str, route: str, code: int) -> None:
        key = (model, instance, route, code)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(model, instance, route, str(code))
        child.inc()

    def failed(self, model: str, instance: str, reason: str) -> None:
        """A failure that is not a relayed response: no instance, an unreachable one, a refusal."""
        self.errors.labels(model, instance, reason).inc()

    # ---- per request, for a relay that sends the body itself (the gateway's hot path)

    def begin(self, model: str, instance: str, route: str, status: int) -> _Series:
        """A response from `instance` starts being relayed; pass what this returns to `first` and `end`."""
        series = self._series_of(model, instance)
        series.in_flight.inc()
        self.count(model, instance, route, status)
        if status >= 500:
            self.failed(model, instance, ENGINE_ERROR)
        return series

    @staticmethod
    def first(series: _Series, seconds: float) -> None:
        series.first_chunk.observe(seconds)

    def end(
        self, series: _Series, model: str, instance: str, seconds: float, usage: Usage | None, broke_off: bool
    ) -> None:
        series.in_flight.dec()
        series.duration.observe(seconds)
        if broke_off:
            self.failed(model, instance, BROKE_OFF)
        elif usage is not None:
            if usage.prompt_tokens:
                series.prompt_tokens.inc(usage.prompt_tokens)
            if usage.completion_tokens:
                series.completion_tokens.inc(usage.completion_tokens)

    # ---- for a relayed StreamingResponse

    def relayed(
        self, response: StreamingResponse, model: str, instance: str, route: str, started: float
    ) -> StreamingResponse:
        """Watch `response` (relayed from `instance`, sent at perf_counter `started`) as it streams."""
        series = self.begin(model, instance, route, response.status_code)
        scan = response.status_code < 400 and "content-encoding" not in response.headers
        response.body_iterator = self._watch(response.body_iterator, series, model, instance, started, scan)
        return response

    async def _watch(
        self,
        body: AsyncIterable[Any],
        series: _Series,
        model: str,
        instance: str,
        started: float,
        scan: bool,
    ) -> AsyncIterator[Any]:
        head = b""
        tail = b""
        first = True
        broke_off = False
        try:
            async for chunk in body:
                if first:
                    self.first(series, time.perf_counter() - started)
                    first = False
                if scan and isinstance(chunk, bytes):
                    if len(head) < _HEAD_BYTES:
                        head += chunk[: _HEAD_BYTES - len(head)]
                    tail = (tail + chunk)[-_TAIL_BYTES:]
                yield chunk
        except (asyncio.CancelledError, GeneratorExit):
            raise  # the client went away: not the engine's failure
        except Exception:
            broke_off = True
            raise
        finally:
            broke_off = broke_off or (scan and _BROKE_OFF in tail)
            usage = find_usage(head, tail) if scan and not broke_off else None
            self.end(series, model, instance, time.perf_counter() - started, usage, broke_off)


class BodyWatch:
    """The first and last bytes of a relayed body, kept as it passes, for its `usage` afterwards."""

    __slots__ = ("head", "tail")

    def __init__(self) -> None:
        self.head = b""
        self.tail = b""

    def see(self, chunk: bytes) -> None:
        if len(self.head) < _HEAD_BYTES:
            self.head += chunk[: _HEAD_BYTES - len(self.head)]
        tail = self.tail + chunk if self.tail else chunk
        self.tail = tail[-_TAIL_BYTES:] if len(tail) > _TAIL_BYTES else tail

    def usage(self) -> Usage | None:
        return find_usage(self.head, self.tail)
