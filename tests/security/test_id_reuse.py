"""Ids are never handed out twice: a new instance must not inherit a deleted one's logs or reports."""

from __future__ import annotations

import httpx
from alembic import command
from sqlalchemy import text

from gpustack.server.db.engine import create_engine
from gpustack.server.db.migrate import alembic_config, upgrade_to_head
from gpustack.server.db.tables import Base
from tests.server.conftest import RunningServer
from tests.server.test_models_api import instances, wait_for

_NOW = "CURRENT_TIMESTAMP"


async def test_every_sqlite_table_keeps_autoincrement_after_all_migrations(tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(f"sqlite:///{tmp_path / 'database.db'}")
    try:
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
            ).all()
        schema = {name: sql for name, sql in rows}
        for table in Base.metadata.tables.values():
            # Tables keyed by a name (cluster secrets, the leader lease) hand out no ids to reuse.
            if "id" not in table.c or not table.c.id.primary_key:
                continue
            assert "AUTOINCREMENT" in schema[table.name].upper(), f"{table.name} would reuse ids"
    finally:
        await engine.dispose()


async def test_upgrading_a_database_that_lost_autoincrement_keeps_its_instances_and_never_reuses_ids(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'database.db'}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0002"))
            await connection.execute(
                text(
                    "INSERT INTO models (name, description, source, local_path, backend, backend_parameters, "
                    "env, replicas, ready_replicas, placement_strategy, worker_selector, cpu_offloading, "
                    "distributed_inference_across_workers, restart_on_error, created_at, updated_at) VALUES "
                    "('m', '', 'local_path', '/m.gguf', 'llama-box', '[]', '{}', 1, 0, 'spread', '{}', "
                    f"1, 1, 1, {_NOW}, {_NOW})"
                )
            )
            for name in ("m-1", "m-2", "m-3"):
                await connection.execute(
                    text(
                        "INSERT INTO model_instances (name, model_id, model_name, state, state_message, "
                        "state_changed_at, restart_count, gpu_indexes, subordinate_workers, version, "
                        f"created_at, updated_at) VALUES ('{name}', 1, 'm', 'running', '', {_NOW}, 0, '[]', "
                        f"'[]', 1, {_NOW}, {_NOW})"
                    )
                )
            await connection.execute(text("DELETE FROM model_instances WHERE name = 'm-3'"))
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            kept = (await connection.execute(text("SELECT id, name FROM model_instances ORDER BY id"))).all()
            assert [tuple(row) for row in kept] == [(1, "m-1"), (2, "m-2")]
            await connection.execute(text("DELETE FROM model_instances WHERE name = 'm-2'"))
            await connection.execute(
                text(
                    "INSERT INTO model_instances (name, model_id, model_name, state, state_message, "
                    "state_changed_at, restart_count, gpu_indexes, subordinate_workers, version, created_at, "
                    "updated_at) VALUES ('m-4', 1, 'm', 'pending', '', "
                    f"{_NOW}, 0, '[]', '[]', 1, {_NOW}, {_NOW})"
                )
            )
            new_id = (
                await connection.execute(text("SELECT id FROM model_instances WHERE name = 'm-4'"))
            ).scalar()
        assert new_id == 3  # above every id alive at the upgrade, and never 2 again
    finally:
        await engine.dispose()


async def test_a_new_models_instance_never_gets_a_deleted_instances_id(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    seen: set[int] = set()
    for round_ in range(3):
        name = f"m{round_}"
        created = await admin.post("/v2/models", json={"name": name, "local_path": "/models/m.gguf"})
        assert created.status_code == 201, created.text
        [instance] = await wait_for(lambda name=name: _instances_of(admin, name))
        assert instance["id"] not in seen
        seen.add(instance["id"])
        assert (await admin.delete(f"/v2/models/{created.json()['id']}")).status_code == 204


async def _instances_of(admin: httpx.AsyncClient, model_name: str) -> list[dict]:
    return [i for i in await instances(admin) if i["model_name"] == model_name]
