"""API keys under load: a known key costs no database access, concurrent first uses of one key make a
single lookup, and a flood of wrong keys is answered from memory."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import event

from tests.server.conftest import RunningServer
from tests.server.stub_models import api_key


def count_key_lookups(server: RunningServer) -> list[str]:
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM api_keys" in statement:
            seen.append(statement)

    event.listen(server.ctx.engine.sync_engine, "before_cursor_execute", before)
    return seen


async def test_concurrent_first_uses_of_a_key_make_one_lookup_and_later_ones_none(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    key = await api_key(admin)
    lookups = count_key_lookups(server)
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as http:
        answers = await asyncio.gather(*(http.get("/v1/models") for _ in range(40)))
        assert {r.status_code for r in answers} == {200}
        assert len(lookups) == 1
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json={"model": "x"}) for _ in range(40))
        )
        assert {r.status_code for r in answers} == {404}
        assert len(lookups) == 1


async def test_a_flood_of_one_wrong_key_is_answered_from_memory(server: RunningServer) -> None:
    wrong = "gpustack_0123456789abcdef_" + "0" * 32
    lookups = count_key_lookups(server)
    async with server.client(headers={"Authorization": f"Bearer {wrong}"}) as http:
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json={"model": "x"}) for _ in range(30))
        )
        assert {r.status_code for r in answers} == {401}
        assert answers[0].json()["error"]["code"] == "invalid_api_key"
    assert len(lookups) == 1
