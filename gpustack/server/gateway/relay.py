"""The gateway's hot path: one OpenAI request from arrival to the last relayed byte, as plain ASGI.

In order: admission (in-flight limits), credentials (the cache: no database for a known key), the body
(a JSON body whole, a multipart upload only up to its `model` field, the rest streamed on), the model
and the routes its backend serves, the key's allowed models and quotas, then the instances in the
balancer's order until one answers, the answer streamed back, and usage, metrics and one access log line.
Nothing here touches the database: usage is written in batches (usage.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from gpustack.metrics import gateway as meter
from gpustack.metrics.gateway import BodyWatch, GatewayMetrics, Usage
from gpustack.schemas.routes import OpenAIRoute
from gpustack.server import json_body
from gpustack.server.auth import Principal, authenticate
from gpustack.server.errors import ApiError, TooManyRequests, openai_error_type
from gpustack.server.gateway.admission import Admission
from gpustack.server.gateway.balancer import Balancer
from gpustack.server.gateway.multipart import NEED_MORE, FieldFinder, boundary_of
from gpustack.server.gateway.quotas import Limits, Quotas
from gpustack.server.gateway.routing import Endpoint, ModelRoutes, RoutingTable
from gpustack.server.gateway.streams import UsageEventFilter
from gpustack.server.gateway.upstream import BrokeOff, Pool, Response, UpstreamError
from gpustack.server.gateway.usage import UsageRecorder
from gpustack.utils.relay import WORKER_ERROR_HEADER, UpstreamBrokeOff, broken_stream_event

logger = logging.getLogger("gpustack.server.gateway")
access_log = logging.getLogger("gpustack.server.gateway.access")

BODY_FLAG = "--gateway-max-body-size"
_WORKER_ERROR = WORKER_ERROR_HEADER.lower().encode()
# Response headers not passed back: the hop's own, the engine's CORS answer (ours is the server's, see
# cors.py), its request id (ours is set for every response) and the worker's internal marker.
_DROPPED = frozenset(
    {
        b"connection", b"keep-alive", b"transfer-encoding", b"server", b"date", b"x-request-id",
        b"proxy-connection", b"te", b"trailer", b"upgrade", _WORKER_ERROR,
    }
)  # fmt: skip
_STREAMED_USAGE_ROUTES = frozenset({OpenAIRoute.CHAT, OpenAIRoute.COMPLETIONS})


class GatewayError(Exception):
    """An answer the gateway gives itself, in OpenAI's error shape."""

    def __init__(
        self, status: int, message: str, code: str | None = None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after


class _ClientGone(Exception):
    pass


@dataclass
class GatewaySettings:
    max_body: int
    server_in_flight: int = 0  # 0: no limit
    model_in_flight: int = 0


@dataclass
class _Record:
    """What the access log line says about a request."""

    request_id: str
    method: str
    path: str
    status: int = 0
    model: str = "-"
    instance: str = "-"
    user: str = "-"
    api_key_id: int | None = None
    via: str = "-"
    attempts: int = 0
    first_chunk: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    outcome: str = ""


class Gateway:
    """What every request of the hot path shares; one per server process."""

    def __init__(
        self,
        routing: RoutingTable,
        settings: GatewaySettings,
        usage: UsageRecorder | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.routing = routing
        self.settings = settings
        self.usage = usage
        self.metrics = metrics
        self.pool = Pool()
        self.balancer = Balancer()
        self.admission = Admission(settings.server_in_flight, settings.model_in_flight)
        self.quotas = Quotas()
        routing.on_rebuild = self.balancer.forget

    # ---- the request

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, route: OpenAIRoute, request_id: str
    ) -> None:
        started = time.perf_counter()
        record = _Record(request_id, scope["method"], scope["path"])
        sent = False

        async def send_noting(message: Message) -> None:
            nonlocal sent
            if message["type"] == "http.response.start":
                sent = True
                record.status = message["status"]
            await send(message)

        refused = self.admission.enter()
        try:
            if refused is not None:
                raise GatewayError(refused.status, refused.message, refused.code, retry_after=1)
            await self._handle(scope, receive, send_noting, route, record)
        except GatewayError as exc:
            if not sent:
                await _send_error(send_noting, exc)
        except _ClientGone:
            record.outcome = " (client went away)"
        except BaseException:
            record.outcome = record.outcome or " (cut off)"
            raise
        finally:
            if refused is None:
                self.admission.leave()
            self._log(record, started)

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, route: OpenAIRoute, record: _Record
    ) -> None:
        principal = await _authenticate(scope)
        record.user = principal.username
        record.api_key_id = principal.api_key_id
        headers = _headers(scope)
        content_type = headers.get(b"content-type", b"application/json")
        length = _content_length(headers.get(b"content-length"), self.settings.max_body)
        payload: dict[str, Any] | None = None
        body: bytes | AsyncIterator[bytes]
        if route.multipart:
            model, body = await self._read_form(receive, content_type, length)
        else:
            raw = await _read_body(receive, self.settings.max_body)
            payload = _json_object(raw)
            model = _model_field(payload)
            body = raw
        record.model = model
        target = self._target(model, route, principal)
        if payload is not None and target.ignored_fields:
            _refuse_ignored(payload, route, target)
        subjects = _quota_subjects(principal)
        if subjects:
            refusal = self.quotas.admit(subjects)
            if refusal is not None:
                raise GatewayError(429, refusal.message, "rate_limit_exceeded", refusal.retry_after)
        busy = self.admission.enter_model(model)
        if busy is not None:
            raise GatewayError(busy.status, busy.message, busy.code, retry_after=1)
        try:
            endpoints = self.routing.endpoints(model)
            if not endpoints:
                self._failed(model, "", meter.NO_RUNNING_INSTANCE, route, 503)
                raise GatewayError(
                    503,
                    f"model {model!r} has no running instance yet; check its instances' state",
                    "model_not_ready",
                )
            hide_usage = False
            if payload is not None and route in _STREAMED_USAGE_ROUTES and payload.get("stream") is True:
                options = payload.get("stream_options")
                if not (isinstance(options, dict) and options.get("include_usage") is True):
                    # Ask the engine for the usage the meter needs; the client did not: it is not passed on.
                    kept = options if isinstance(options, dict) else {}
                    payload["stream_options"] = {**kept, "include_usage": True}
                    body = json.dumps(payload).encode()
                    hide_usage = True
            await self._relay(
                scope, receive, send, route, record, target, principal, endpoints, body, content_type,
                headers.get(b"accept"), hide_usage,
            )  # fmt: skip
        finally:
            self.admission.leave_model(model)

    def _target(self, model: str, route: OpenAIRoute, principal: Principal) -> ModelRoutes:
        target = self.routing.model(model)
        if target is None:
            self._failed("", "", meter.NO_SUCH_MODEL)  # not by the name asked: anyone could add series
            raise GatewayError(404, f"model {model!r} does not exist", "model_not_found")
        if principal.allowed_models is not None and model not in principal.allowed_models:
            allowed = ", ".join(sorted(principal.allowed_models)) or "none"
            raise GatewayError(
                403, f"this API key may not use model {model!r}; it may use: {allowed}", "model_not_allowed"
            )
        if route not in target.routes:
            raise GatewayError(
                400,
                f"model {model!r} (backend {target.backend}) does not serve /v1/{route.value}; "
                f"it serves {target.describe_routes()}",
                "unsupported_route",
            )
        return target

    async def _read_form(
        self, receive: Receive, content_type: bytes, length: int | None
    ) -> tuple[str, AsyncIterator[bytes]]:
        """The form's model, and the whole body as a stream: what was read to find the model, then the
        rest as it arrives."""
        boundary = boundary_of(content_type)
        if boundary is None:
            raise GatewayError(
                400, "this route takes a multipart/form-data body (a file and fields, model among them)"
            )
        limit = self.settings.max_body
        finder = FieldFinder(boundary)
        received = 0
        more = True
        found: Any = NEED_MORE
        while found is NEED_MORE and more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise GatewayError(413, _too_large(limit))
            finder.feed(chunk)
            more = bool(message.get("more_body"))
            found = finder.find()
        if not isinstance(found, str) or not found:
            raise GatewayError(400, "the form needs a 'model' field naming the model", "model_required")
        head = bytes(finder.buffer)

        async def stream() -> AsyncIterator[bytes]:
            nonlocal received
            yield head
            remaining = more
            while remaining:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise GatewayError(413, _too_large(limit))
                remaining = bool(message.get("more_body"))
                if chunk:
                    yield chunk

        return found, stream()

    # ---- to the instances

    async def _relay(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: OpenAIRoute,
        record: _Record,
        target: ModelRoutes,
        principal: Principal,
        endpoints: list[Endpoint],
        body: bytes | AsyncIterator[bytes],
        content_type: bytes,
        accept: bytes | None,
        hide_usage: bool,
    ) -> None:
        model = target.name
        query = scope.get("query_string") or b""
        line_end = (b"?" + query if query else b"") + b" HTTP/1.1\r\n"
        tail = b"Content-Type: " + content_type + b"\r\n"
        if accept:
            tail += b"Accept: " + accept + b"\r\n"
        tail += b"X-Request-ID: " + record.request_id.encode() + b"\r\n"
        if isinstance(body, bytes):
            tail += b"Content-Length: %d\r\n\r\n" % len(body)
        else:
            tail += b"Transfer-Encoding: chunked\r\n\r\n"
        path = route.value.encode()
        failures: list[str] = []
        for endpoint in self.balancer.order(endpoints, _instance_id):
            if not isinstance(body, bytes) and record.attempts:
                break  # a streamed upload cannot be sent twice
            record.attempts += 1
            head = b"POST " + endpoint.path_prefix + path + line_end + endpoint.headers + tail
            self.balancer.started(endpoint.instance_id)
            sent_at = time.perf_counter()
            try:
                response = await self.pool.send(endpoint.host, endpoint.port, head, body)
            except UpstreamError as exc:
                self.balancer.finished(endpoint.instance_id)
                self._unanswered(endpoint, model, meter.UNREACHABLE, str(exc), failures)
                continue
            refusal = await _refusal(response, endpoint)
            if refusal is not None:
                self.balancer.finished(endpoint.instance_id)
                self._unanswered(endpoint, model, meter.WORKER_REFUSED, refusal, failures)
                continue
            self.balancer.succeeded(endpoint.instance_id)
            record.instance = endpoint.instance_name
            record.via = "direct" if endpoint.direct else f"worker {endpoint.worker_name}"
            try:
                await self._respond(receive, send, route, record, target, principal, endpoint, response,
                                    sent_at, hide_usage, isinstance(body, bytes))  # fmt: skip
            finally:
                self.balancer.finished(endpoint.instance_id)
            return
        logger.warning("request %s: model %s: no instance answered: %s", record.request_id, model,
                       "; ".join(failures))  # fmt: skip
        self._failed(model, "", meter.ALL_UNREACHABLE, route, 503)
        raise GatewayError(
            503,
            f"no instance of model {model!r} could be reached ({'; '.join(failures)})",
            "model_unreachable",
        )

    def _unanswered(self, endpoint: Endpoint, model: str, reason: str, why: str, failures: list[str]) -> None:
        out_for = self.balancer.failed(endpoint.instance_id, endpoint.instance_name)
        if self.metrics is not None:
            self.metrics.failed(model, endpoint.instance_name, reason)
        failures.append(f"{endpoint.instance_name} on {endpoint.worker_name}: {why}")
        logger.debug("model %s: instance %s did not answer (%s)%s; trying the next one", model,
                     endpoint.instance_name, why, f", out for {out_for:.0f}s" if out_for else "")  # fmt: skip

    async def _respond(
        self,
        receive: Receive,
        send: Send,
        route: OpenAIRoute,
        record: _Record,
        target: ModelRoutes,
        principal: Principal,
        endpoint: Endpoint,
        response: Response,
        sent_at: float,
        hide_usage: bool,
        body_read: bool,
    ) -> None:
        status = response.status
        headers = [
            (k, v) for k, v in response.headers if k not in _DROPPED and not k.startswith(b"access-control-")
        ]
        event_stream = (response.header(b"content-type") or b"").startswith(b"text/event-stream")
        usage_filter = UsageEventFilter() if hide_usage and event_stream and status == 200 else None
        if usage_filter is not None:
            headers = [(k, v) for k, v in headers if k != b"content-length"]
        watch = BodyWatch() if status < 400 and response.header(b"content-encoding") is None else None
        series = (
            self.metrics.begin(target.name, endpoint.instance_name, route.value, status)
            if self.metrics
            else None
        )
        logger.debug(
            "request %s: model %s: instance %s on %s (%s, engine port %d): HTTP %d",
            record.request_id, target.name, endpoint.instance_name, endpoint.worker_name, record.via,
            endpoint.engine_port, status,
        )  # fmt: skip
        gone = asyncio.Event()
        watcher = (
            asyncio.ensure_future(_watch_disconnect(receive, gone, response))
            if event_stream and body_read
            else None
        )
        broke_off = False
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            ended = False
            try:
                async for piece, last in response.pieces():
                    if record.first_chunk is None:
                        record.first_chunk = time.perf_counter() - sent_at
                        if series is not None:
                            GatewayMetrics.first(series, record.first_chunk)
                    if usage_filter is not None:
                        piece = usage_filter.feed(piece)
                        if not piece and not last:
                            continue
                        last = False  # what the filter holds back goes after
                    if watch is not None:
                        watch.see(piece)
                    await send({"type": "http.response.body", "body": piece, "more_body": not last})
                    ended = last
            except BrokeOff as exc:
                if gone.is_set():
                    raise _ClientGone from None
                broke_off = True
                logger.warning("request %s: model %s: instance %s stopped in the middle of its answer: %s",
                               record.request_id, target.name, endpoint.instance_name, exc)  # fmt: skip
                if not event_stream:
                    record.outcome = " (engine broke off)"
                    raise UpstreamBrokeOff(str(exc)) from None
                event = broken_stream_event(
                    f"the model's engine stopped in the middle of the response ({exc})"
                )
                await send({"type": "http.response.body", "body": event, "more_body": True})
            if usage_filter is not None:
                rest = usage_filter.flush()
                if rest:
                    await send({"type": "http.response.body", "body": rest, "more_body": True})
            if not ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watcher is not None:
                watcher.cancel()
            response.release()
            usage = (usage_filter.usage if usage_filter is not None else None) or (
                watch.usage() if watch is not None and not broke_off else None
            )
            if usage is not None:
                record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            if series is not None and self.metrics is not None:
                self.metrics.end(series, target.name, endpoint.instance_name, time.perf_counter() - sent_at,
                                 usage, broke_off)  # fmt: skip
            self._account(principal, target.name, usage, broke_off or status >= 500)

    # ---- bookkeeping

    def _account(self, principal: Principal, model: str, usage: Usage | None, failed: bool) -> None:
        prompt = (usage.prompt_tokens or 0) if usage is not None else 0
        completion = (usage.completion_tokens or 0) if usage is not None else 0
        if self.usage is not None and principal.user_id is not None:
            self.usage.record(principal.user_id, principal.api_key_id or 0, model, prompt, completion, failed)
        if prompt + completion:
            subjects = _quota_subjects(principal)
            if subjects:
                self.quotas.used_tokens(subjects, prompt + completion)

    def _failed(self, model: str, instance: str, reason: str, route: OpenAIRoute | None = None,
                status: int = 0) -> None:  # fmt: skip
        if self.metrics is None:
            return
        self.metrics.failed(model, instance, reason)
        if route is not None:
            self.metrics.count(model, instance, route.value, status)

    def _log(self, record: _Record, started: float) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        elapsed = (time.perf_counter() - started) * 1000
        tokens = (
            f"{record.prompt_tokens or 0}+{record.completion_tokens or 0}"
            if record.prompt_tokens is not None or record.completion_tokens is not None
            else "-"
        )
        if access_log.isEnabledFor(logging.DEBUG):
            first = f"{record.first_chunk * 1000:.1f}ms" if record.first_chunk is not None else "-"
            access_log.debug(
                '%s "%s %s" %d%s %.1fms model=%s instance=%s tokens=%s user=%s key=%s via=%s attempts=%d '
                "first_chunk=%s",
                record.request_id, record.method, record.path, record.status, record.outcome, elapsed,
                record.model, record.instance, tokens, record.user, record.api_key_id or "session",
                record.via, record.attempts, first,
            )  # fmt: skip
            return
        access_log.info('%s "%s %s" %d%s %.1fms model=%s instance=%s tokens=%s user=%s', record.request_id,
                        record.method, record.path, record.status, record.outcome, elapsed, record.model,
                        record.instance, tokens, record.user)  # fmt: skip

    async def run(self) -> None:
        """Background upkeep for the life of the server: usage writes and forgetting idle quota windows."""
        tasks = [asyncio.ensure_future(self.usage.run())] if self.usage is not None else []
        try:
            while True:
                await asyncio.sleep(60)
                self.quotas.prune()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """At shutdown, after the last request: write the usage left and close the connections."""
        self.pool.close()
        if self.usage is not None:
            try:
                await self.usage.flush()
            except Exception as exc:
                logger.warning(
                    "usage: %d buckets could not be written at shutdown: %s", self.usage.pending, exc
                )


# ---- helpers


def _instance_id(endpoint: Endpoint) -> int:
    return endpoint.instance_id


async def _authenticate(scope: Scope) -> Principal:
    try:
        principal = await authenticate(Request(scope))
    except ApiError as exc:
        if isinstance(exc, TooManyRequests):
            raise GatewayError(429, exc.message, "rate_limit_exceeded", exc.retry_after) from None
        if exc.status_code == 503:
            raise GatewayError(503, exc.message) from None
        raise GatewayError(exc.status_code, exc.message, "invalid_api_key") from None
    except Exception as exc:
        logger.warning("gateway: authentication failed: %s", exc)
        raise GatewayError(503, "the server cannot check credentials right now; retry shortly",
                           retry_after=1) from None  # fmt: skip
    if not principal.is_user:
        raise GatewayError(403, "worker credentials and the cluster token cannot call models; use an API key")
    if principal.require_password_change:
        raise GatewayError(403, "change your initial password before using the API")
    return principal


def _quota_subjects(principal: Principal) -> list[tuple[str, int, Limits]]:
    subjects = []
    if principal.api_key_id is not None and principal.key_limits.any:
        subjects.append(("key", principal.api_key_id, principal.key_limits))
    if principal.user_id is not None and principal.user_limits.any:
        subjects.append(("user", principal.user_id, principal.user_limits))
    return subjects


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name: value for name, value in scope["headers"] if name in _READ_HEADERS}


_READ_HEADERS = frozenset({b"content-type", b"content-length", b"accept"})


def _too_large(limit: int) -> str:
    from gpustack.server.edge import format_size

    return (
        f"the request body is larger than {format_size(limit)}, the most this route accepts; "
        f"the server's {BODY_FLAG} raises it"
    )


def _content_length(value: bytes | None, limit: int) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise GatewayError(400, "Content-Length must be a number of bytes")
    length = int(value)
    if length > limit:
        raise GatewayError(413, _too_large(limit))
    return length


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, _too_large(limit))
            chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise GatewayError(400, "the request body must be a JSON object with a 'model' field")
    try:
        payload = json_body.loads(raw)
    except json_body.BodyNotJSON as exc:
        raise GatewayError(400, str(exc)) from None
    if not isinstance(payload, dict):
        raise GatewayError(400, "the request body must be a JSON object")
    return payload


def _refuse_ignored(payload: dict[str, Any], route: OpenAIRoute, target: ModelRoutes) -> None:
    """A 400 for a field the model's engine would ignore (an answer that looks right and is not)."""
    for name, advice in target.ignored_fields.get(route, {}).items():
        if payload.get(name) not in (None, False):
            raise GatewayError(
                400,
                f"model {target.name!r} (backend {target.backend}) cannot honour {name!r} on "
                f"/v1/{route.value}: {advice}",
                "unsupported_parameter",
            )


def _model_field(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "'model' is required and must be a string", "model_required")
    return model


async def _refusal(response: Response, endpoint: Endpoint) -> str | None:
    """Why the answer is not the engine's (the worker refused, or an engine that does not hold this
    instance's secret answered: a stale route); None for an engine's answer."""
    if response.header(_WORKER_ERROR) is None and not (endpoint.direct and response.status == 401):
        return None
    detail = await response.read()
    response.release()
    if response.status == 401 and endpoint.direct:
        return "the engine on its port refused this instance's secret (another engine now uses the port?)"
    try:
        return str(json.loads(detail)["message"])
    except (ValueError, KeyError, TypeError):
        return detail.decode(errors="replace")[:200]


async def _watch_disconnect(receive: Receive, gone: asyncio.Event, response: Response) -> None:
    """A client that leaves a stream stops the engine's generation: its connection is closed."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            response.abort()
            return


async def _send_error(send: Send, exc: GatewayError) -> None:
    body = json.dumps(
        {"error": {"message": exc.message, "type": openai_error_type(exc.status), "code": exc.code}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(exc.retry_after).encode()))
    if exc.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
