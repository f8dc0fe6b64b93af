"""Overload: a database held busy by another writer, and rows changing under a request, are waited out
and retried instead of answering 500s and 409s that the caller must retry by hand."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from gpustack.server.db.tables import ModelInstanceRow, ModelRow
from tests.server.conftest import RunningServer
from tests.server.test_db_retry import shorten_busy_timeout
from tests.server.test_models_api import instances, wait_for


def sqlite_path(server: RunningServer) -> Path:
    url = make_url(server.config.database_url)
    if url.get_backend_name() != "sqlite":
        pytest.skip("a lock held by another connection past busy_timeout is SQLite's failure")
    assert url.database
    return Path(url.database)


async def short_busy_timeout(server: RunningServer) -> None:
    """The server's connections give up waiting for a lock after 50 ms, so that a test can outlast it."""
    shorten_busy_timeout(server.ctx.engine)
    await server.ctx.engine.dispose()  # pooled connections reopen with the short timeout


def hold_write_lock(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


async def create_model(admin: httpx.AsyncClient, name: str, replicas: int = 0) -> dict[str, Any]:
    body = {"name": name, "local_path": "/nowhere/model.gguf", "replicas": replicas}
    response = await admin.post("/v2/models", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_a_write_during_a_long_lock_is_retried_not_a_500(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    path = sqlite_path(server)
    model = await create_model(admin, "busy")
    await short_busy_timeout(server)
    holder = hold_write_lock(path)
    asyncio.get_running_loop().call_later(0.4, holder.rollback)
    try:
        response = await admin.put(f"/v2/models/{model['id']}", json={"description": "after the lock"})
    finally:
        holder.close()
    assert response.status_code == 200, response.text
    assert (await admin.get(f"/v2/models/{model['id']}")).json()["description"] == "after the lock"


async def test_a_lock_that_outlasts_every_retry_is_a_503_that_says_so(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    path = sqlite_path(server)
    model = await create_model(admin, "stuck")
    await short_busy_timeout(server)
    holder = hold_write_lock(path)
    try:
        response = await admin.put(f"/v2/models/{model['id']}", json={"description": "never"})
    finally:
        holder.close()
    assert response.status_code == 503, response.text
    message = response.json()["message"]
    assert "the database is busy (database is locked), so updating model" in message
    assert "try again in a few seconds" in message


async def test_deleting_a_model_whose_instances_change_meanwhile_succeeds_at_once(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    model = await create_model(admin, "churn", replicas=3)
    await wait_for(lambda: _has_instances(admin, model["id"], 3))
    changed = 0

    def report_meanwhile(session: Session, _context: Any, _instances: Any) -> None:
        """As the deletion flushes, a worker's report changes the instances (another connection)."""
        nonlocal changed
        if changed or not any(isinstance(row, ModelRow) for row in session.deleted):
            return
        changed += 1
        with server.ctx.engine.sync_engine.begin() as connection:
            connection.execute(
                update(ModelInstanceRow)
                .where(ModelInstanceRow.model_id == model["id"])
                .values(version=ModelInstanceRow.version + 1, state_message="a report arrived")
            )

    event.listen(Session, "before_flush", report_meanwhile)
    try:
        response = await admin.delete(f"/v2/models/{model['id']}")
    finally:
        event.remove(Session, "before_flush", report_meanwhile)
    assert changed == 1
    assert response.status_code == 204, response.text  # not a 409 to be retried by hand
    assert (await admin.get(f"/v2/models/{model['id']}")).status_code == 404
    assert await instances(admin, model_id=model["id"]) == []


async def _has_instances(admin: httpx.AsyncClient, model_id: int, count: int) -> bool:
    return len(await instances(admin, model_id=model_id)) == count


async def test_a_route_without_retries_answers_a_busy_database_with_a_503_not_a_500(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    path = sqlite_path(server)
    await short_busy_timeout(server)
    holder = hold_write_lock(path)
    try:
        response = await admin.post("/v2/api-keys", json={"name": "during-a-lock"})
    finally:
        holder.close()
    assert response.status_code == 503, response.text
    assert response.json()["message"] == (
        "the database is busy (database is locked); try again in a few seconds"
    )
    assert (await admin.post("/v2/api-keys", json={"name": "after-the-lock"})).status_code == 201
