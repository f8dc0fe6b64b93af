"""The gateway's parts on their own: balancing, quotas, the multipart model field, the usage event a
client did not ask for, how an instance is reached, and the keep-alive pool."""

from __future__ import annotations

import asyncio

import pytest

from gpustack.metrics.gateway import Usage
from gpustack.schemas.routes import OpenAIRoute
from gpustack.server.gateway.balancer import Balancer
from gpustack.server.gateway.multipart import NEED_MORE, FieldFinder, boundary_of
from gpustack.server.gateway.quotas import Limits, Quotas
from gpustack.server.gateway.routing import RoutingTable
from gpustack.server.gateway.streams import UsageEventFilter
from gpustack.server.gateway.upstream import ConnectFailed, Pool
from gpustack.utils.engine_secret import engine_secret


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_balancer_prefers_the_fewest_outstanding_and_takes_turns_when_equal() -> None:
    balancer = Balancer()
    ids = [1, 2, 3]
    balancer.started(1)
    balancer.started(1)
    balancer.started(2)
    assert balancer.order(ids, int)[0] == 3
    balancer.finished(1)
    balancer.finished(1)
    balancer.finished(2)
    firsts = {balancer.order(ids, int)[0] for _ in range(6)}
    assert firsts == {1, 2, 3}


def test_an_instance_that_keeps_failing_is_left_out_then_tried_again_for_longer_each_time() -> None:
    clock = Clock()
    balancer = Balancer(clock)
    for _ in range(2):
        assert balancer.failed(1, "m-1") == 0.0
    assert balancer.failed(1, "m-1") == 5.0
    assert balancer.order([1, 2], int) == [2, 1] and balancer.is_out(1)
    clock.now += 5.1
    assert not balancer.is_out(1)
    for _ in range(3):
        out = balancer.failed(1, "m-1")
    assert out == 10.0  # the second time out: twice as long
    balancer.succeeded(1)
    assert not balancer.is_out(1) and balancer.failed(1, "m-1") == 0.0
    assert balancer.order([1], int) == [1]  # alone, it is tried whatever its record


def test_quotas_count_requests_and_tokens_over_a_sliding_minute() -> None:
    clock = Clock()
    quotas = Quotas(clock)
    key = [("key", 7, Limits(rpm=2, tpm=100))]
    assert quotas.admit(key) is None
    clock.now += 30
    assert quotas.admit(key) is None
    refused = quotas.admit(key)
    assert (
        refused is not None
        and refused.retry_after == 30
        and "limit is 2 requests per minute" in refused.message
    )
    clock.now += 30.5  # the first request has left the window
    assert quotas.admit(key) is None
    quotas.used_tokens(key, 150)
    clock.now += 1
    over = quotas.admit(key)
    assert over is not None and "used 150 tokens" in over.message and over.retry_after == 59
    clock.now += 60
    assert quotas.admit(key) is None
    quotas.prune()


def test_the_model_field_is_found_in_a_form_fed_in_pieces() -> None:
    assert boundary_of(b'multipart/form-data; boundary="abc"') == b"abc"
    assert boundary_of(b"application/json") is None
    form = (
        b'--abc\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n' + b"x" * 1000
        + b'\r\n--abc\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n--abc--\r\n'
    )  # fmt: skip
    finder = FieldFinder(b"abc")
    found = NEED_MORE
    for start in range(0, len(form), 37):
        finder.feed(form[start : start + 37])
        found = finder.find()
        if found is not NEED_MORE:
            break
    assert found == "whisper"
    without = FieldFinder(b"abc")
    without.feed(b'--abc\r\nContent-Disposition: form-data; name="language"\r\n\r\nen\r\n--abc--\r\n')
    assert without.find() is None


def test_the_usage_event_the_client_did_not_ask_for_is_taken_out_whole() -> None:
    events = [
        b'data: {"choices":[{"delta":{"content":"a"}}],"usage":null}\n\n',
        b'data: {"choices":[{"delta":{"content":"b"}}],"usage":null}\r\n\r\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    stream = b"".join(events)
    usage_filter = UsageEventFilter()
    out = b"".join(usage_filter.feed(stream[i : i + 11]) for i in range(0, len(stream), 11))
    assert out + usage_filter.flush() == events[0] + events[1] + events[3]
    assert usage_filter.usage == Usage(3, 2)


def _rows(worker_ip: str) -> tuple[list[dict], list[dict], list[dict]]:
    model = {
        "id": 1, "name": "m", "backend": "llama-box", "local_path": "/m.gguf",
        "backend_parameters": ["--reranking"], "created_at": "2025-01-01T00:00:00", "ready_replicas": 1,
    }  # fmt: skip
    instance = {"id": 9, "name": "m-1", "model_name": "m", "worker_id": 3, "state": "running", "port": 40001}
    worker = {"id": 3, "name": "w", "ip": worker_ip, "port": 10150}
    return [model], [instance], [worker]


def test_an_instance_here_is_reached_directly_with_its_secret_and_others_through_their_worker() -> None:
    credential = "gpustack-worker_3_" + "a" * 48
    local = RoutingTable(lambda _id: credential, local=frozenset({"10.0.0.5"}))
    local.load(*_rows("10.0.0.5"))
    (direct,) = local.endpoints("m")
    assert direct.direct and (direct.host, direct.port, direct.path_prefix) == ("127.0.0.1", 40001, b"/v1/")
    assert f"Authorization: Bearer {engine_secret(credential, 9)}".encode() in direct.headers
    route = local.model("m")
    assert route is not None and route.routes == frozenset({OpenAIRoute.RERANK})
    remote = RoutingTable(lambda _id: credential, local=frozenset({"10.0.0.5"}))
    remote.load(*_rows("10.0.0.6"))
    (proxied,) = remote.endpoints("m")
    assert not proxied.direct and (proxied.host, proxied.port, proxied.path_prefix) == (
        "10.0.0.6",
        10150,
        b"/proxy/v1/",
    )
    assert b"X-Target-Port: 40001\r\nX-Target-Instance: 9\r\n" in proxied.headers
    assert f"Bearer {credential}".encode() in proxied.headers


async def test_the_pool_reuses_connections_and_tries_a_fresh_one_when_the_engine_closed_an_idle_one() -> None:
    served = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            served.append(head)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if len(served) == 2:  # closes after its second answer, as an engine's idle timeout would
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Pool()
    head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        for _ in range(4):
            response = await pool.send("127.0.0.1", port, head)
            assert (response.status, await response.read()) == (200, b"ok")
            response.release()
            await asyncio.sleep(0.05)
        assert len(served) == 4
        with pytest.raises(ConnectFailed):
            await pool.send("127.0.0.1", 1, head)
    finally:
        pool.close()
        server.close()


def test_routing_changed_event_by_event_matches_routing_built_from_scratch() -> None:
    """Instance events update only their model's endpoints; after each of a few hundred random changes
    (states, ports, moves between workers, deletions, a worker's address, models), the table must route
    exactly as one loaded from the same rows."""
    import random

    from gpustack.server.bus import EventType

    rng = random.Random(7)
    rows: dict[str, dict[int, dict]] = {
        "models": {
            m: {"id": m, "name": f"m{m}", "backend": "llama-box", "local_path": "/m.gguf",
                "ready_replicas": 0, "created_at": "2025-01-01T00:00:00"}
            for m in range(1, 4)
        },
        "workers": {w: {"id": w, "name": f"w{w}", "ip": f"10.0.0.{w}", "port": 10150} for w in range(1, 4)},
        "model_instances": {},
    }  # fmt: skip
    table = RoutingTable(lambda worker_id: f"credential-{worker_id}", local=frozenset({"10.0.0.1"}))
    table.load([], [], [])
    for topic in ("models", "workers"):
        for row in rows[topic].values():
            table.apply(topic, EventType.CREATED, dict(row))
    for step in range(400):
        topic = rng.choice(["model_instances"] * 8 + ["workers", "models"])
        if topic == "model_instances":
            instance_id = rng.randint(1, 30)
            if instance_id in rows[topic] and rng.random() < 0.15:
                table.apply(topic, EventType.DELETED, rows[topic].pop(instance_id))
            else:
                model = rng.randint(1, 3)
                row = {"id": instance_id, "name": f"i{instance_id}", "model_name": f"m{model}",
                       "worker_id": rng.choice([1, 2, 3, None]), "state": rng.choice(["running", "starting"]),
                       "port": rng.choice([None, 40000 + instance_id])}  # fmt: skip
                kind = EventType.UPDATED if instance_id in rows[topic] else EventType.CREATED
                rows[topic][instance_id] = row
                table.apply(topic, kind, dict(row))
        elif topic == "workers":
            worker = dict(rows[topic][rng.randint(1, 3)], ip=f"10.0.0.{rng.randint(1, 4)}")
            rows[topic][worker["id"]] = worker
            table.apply(topic, EventType.UPDATED, dict(worker))
        else:
            model = dict(
                rows[topic][rng.randint(1, 3)], backend_parameters=[rng.choice(["--reranking", "-c 8"])]
            )
            rows[topic][model["id"]] = model
            table.apply(topic, EventType.UPDATED, dict(model))
        fresh = RoutingTable(lambda worker_id: f"credential-{worker_id}", local=frozenset({"10.0.0.1"}))
        fresh.load(*(list(rows[t].values()) for t in ("models", "model_instances", "workers")))
        for name in ("m1", "m2", "m3"):
            assert table.endpoints(name) == fresh.endpoints(name), f"step {step}, model {name}"
            assert table.model(name) == fresh.model(name)
