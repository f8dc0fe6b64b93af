"""Migrations own the schema: they build it from nothing, are safe to re-run, and keep the data."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, MetaData, inspect, select, text

from gpustack.server.db.engine import create_engine
from gpustack.server.db.migrate import upgrade_to_head
from gpustack.server.db.tables import Base


async def test_migrations_create_every_table_the_code_uses(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
            columns = {
                table: {
                    c["name"] for c in await connection.run_sync(lambda s, t=table: inspect(s).get_columns(t))
                }
                for table in Base.metadata.tables
            }
        assert set(Base.metadata.tables) <= tables
        for name, table in Base.metadata.tables.items():
            assert {c.name for c in table.columns} == columns[name], name
    finally:
        await engine.dispose()


async def test_upgrading_again_keeps_the_data(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await upgrade_to_head(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO users (username, full_name, hashed_password, is_admin, "
                    "require_password_change, created_at, updated_at) "
                    "VALUES ('keep', '', 'x', false, false, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                )
            )
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            names = (await connection.execute(text("SELECT username FROM users"))).scalars().all()
        assert names == ["keep"]
    finally:
        await engine.dispose()


async def test_upgrading_from_the_first_release_keeps_instances_and_fills_new_columns(
    database_url: str,
) -> None:
    from alembic import command

    from gpustack.server.db.migrate import alembic_config

    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0001"))
            now = "CURRENT_TIMESTAMP"
            await connection.execute(
                text(
                    "INSERT INTO models (name, description, source, local_path, backend, backend_parameters, "
                    "env, replicas, ready_replicas, placement_strategy, worker_selector, cpu_offloading, "
                    "distributed_inference_across_workers, restart_on_error, created_at, updated_at) VALUES "
                    f"('m', '', 'local_path', '/m.gguf', 'llama-box', '[]', '{{}}', 1, 0, 'spread', '{{}}', "
                    f"true, true, true, {now}, {now})"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO model_instances (name, model_id, model_name, state, state_message, "
                    "state_changed_at, restart_count, gpu_indexes, version, created_at, updated_at) VALUES "
                    f"('m-1', 1, 'm', 'running', '', {now}, 0, '[0]', 1, {now}, {now})"
                )
            )
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    text("SELECT name, subordinate_workers, placement FROM model_instances")
                )
            ).one()
        assert row[0] == "m-1" and row[1] in ([], "[]") and row[2] is None
    finally:
        await engine.dispose()


async def test_upgrading_to_custom_backends_keeps_models_and_instances_placed_in_the_old_shape(
    database_url: str,
) -> None:
    from alembic import command

    from gpustack.schemas.models import ModelInstancePublic, ModelPublic
    from gpustack.server.db.engine import session_factory
    from gpustack.server.db.migrate import alembic_config
    from gpustack.server.db.tables import ModelInstanceRow, ModelRow

    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0004"))
            now = "CURRENT_TIMESTAMP"
            await connection.execute(
                text(
                    "INSERT INTO models (name, description, source, local_path, backend, backend_parameters, "
                    "env, replicas, ready_replicas, placement_strategy, worker_selector, cpu_offloading, "
                    "distributed_inference_across_workers, restart_on_error, created_at, updated_at) VALUES "
                    "('m', '', 'local_path', '/m.gguf', 'llama-box', '[\"--ctx-size=2048\"]', '{}', 1, 0, "
                    f"'spread', '{{}}', true, true, true, {now}, {now})"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO model_instances (name, model_id, model_name, state, state_message, "
                    "state_changed_at, restart_count, gpu_indexes, subordinate_workers, placement, version, "
                    "created_at, updated_at) VALUES ('m-1', 1, 'm', 'running', '', "
                    f'{now}, 0, \'[]\', \'[]\', \'{{"mode": "cpu", "engine": {{"gpu_layers": "0", '
                    f'"threads": "2"}}}}\', 1, {now}, {now})'
                )
            )
        await upgrade_to_head(engine)
        async with session_factory(engine)() as session:
            model = ModelPublic.model_validate((await session.execute(select(ModelRow))).scalar_one())
            instance = ModelInstancePublic.model_validate(
                (await session.execute(select(ModelInstanceRow))).scalar_one()
            )
        assert model.backend_parameters == ["--ctx-size=2048"] and model.run_command is None
        assert model.routes is None and model.resources is None
        assert instance.placement is not None and instance.placement.model_dump(mode="json")["layout"] == {
            "kind": "layers", "gpu_layers": 0, "tensor_split": [], "rpc": [], "threads": 2,
        }  # fmt: skip
    finally:
        await engine.dispose()


# ---- every earlier revision, with data in it --------------------------------------------------------

_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
_LATER = datetime(2027, 1, 1, tzinfo=timezone.utc)
GiB = 1024**3

# What a cluster holds, row by row, as every release since 0001 stores it; columns a revision lacks are
# left out. A migration that adds a required column must add its value here (the test says so).
RELEASE_DATA: dict[str, list[dict[str, Any]]] = {
    "users": [
        {
            "id": 1,
            "username": "admin",
            "full_name": "Default administrator",
            "hashed_password": "x",
            "is_admin": True,
            "require_password_change": False,
            "created_at": _NOW,
            "updated_at": _NOW,
        },
        {
            "id": 2,
            "username": "bob",
            "full_name": "",
            "hashed_password": "y",
            "is_admin": False,
            "require_password_change": True,
            "created_at": _NOW,
            "updated_at": _NOW,
        },
    ],
    "workers": [
        {
            "id": 1,
            "name": "w1",
            "uuid": "0f" * 16,
            "hostname": "w1",
            "ip": "10.0.0.1",
            "port": 10150,
            "labels": {"os": "linux", "rack": "a1"},
            "reported_labels": {"os": "linux"},
            "user_labels": {"rack": "a1"},
            "state": "ready",
            "state_message": "",
            "status": {
                "cpu": {"total": 8},
                "memory": {"total": 64 * GiB},
                "gpu_devices": [
                    {
                        "index": 0,
                        "name": "NVIDIA GeForce RTX 4090",
                        "vendor": "NVIDIA",
                        "type": "cuda",
                        "id": "w1:cuda:0",
                        "memory": {"total": 24 * GiB},
                    }
                ],
            },
            "system_reserved": {"ram": 2 * GiB, "vram": GiB},
            "heartbeat_interval": 5.0,
            "last_heartbeat_at": _NOW,
            "created_at": _NOW,
            "updated_at": _NOW,
        },
    ],
    "models": [
        {
            "id": 1,
            "name": "m",
            "description": "",
            "source": "local_path",
            "local_path": "/models/m.gguf",
            "backend": "llama-box",
            "backend_version": None,
            "backend_parameters": ["--ctx-size=4096"],
            "env": {"A": "1"},
            "replicas": 1,
            "ready_replicas": 1,
            "placement_strategy": "spread",
            "worker_selector": {},
            "gpu_selector": None,
            "cpu_offloading": True,
            "distributed_inference_across_workers": True,
            "restart_on_error": True,
            "created_at": _NOW,
            "updated_at": _NOW,
        },
    ],
    "api_keys": [
        {
            "id": 1,
            "name": "ci",
            "description": "",
            "access_key": "a" * 16,
            "hashed_secret_key": "h",
            "user_id": 1,
            "expires_at": None,
            "created_at": _NOW,
            "updated_at": _NOW,
        },
    ],
    "model_instances": [
        {
            "id": 7,
            "name": "m-1",
            "model_id": 1,
            "model_name": "m",
            "worker_id": 1,
            "worker_name": "w1",
            "worker_ip": "10.0.0.1",
            "port": 40000,
            "pid": 1234,
            "state": "running",
            "state_message": "",
            "state_changed_at": _NOW,
            "restart_count": 0,
            "last_restart_at": None,
            "computed_resource_claim": {"ram": GiB, "vram": {"0": 3 * GiB}},
            "gpu_indexes": [0],
            "resolved_path": "/models/m.gguf",
            "version": 1,
            "created_at": _NOW,
            "updated_at": _NOW,
            # from 0002, in the shape of its time (engine arguments as strings)
            "subordinate_workers": [],
            "placement": {"mode": "gpu", "engine": {"gpu_layers": "999"}},
        },
    ],
    "user_sessions": [  # from 0004
        {"id": 1, "token_hash": "t" * 64, "user_id": 1, "created_at": _NOW, "expires_at": _LATER},
    ],
    "model_files": [  # from 0006
        {
            "id": 3,
            "worker_id": 1,
            "worker_name": "w1",
            "cache_key": "huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF/*q4_k_m.gguf",
            "source": "huggingface",
            "huggingface_repo_id": "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            "huggingface_filename": "*q4_k_m.gguf",
            "state": "ready",
            "state_message": "",
            "size": 491400032,
            "downloaded_bytes": 491400032,
            "download_speed": 0,
            "download_progress": 100.0,
            "resolved_paths": ["/var/lib/gpustack/cache/huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF/x.gguf"],
            "model_names": ["m"],
            "created_at": _NOW,
            "updated_at": _NOW,
        },
    ],
}


def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    from gpustack.server.db.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config())
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


EARLIER = _revisions()[:-1]


def _fill(sync: Any) -> dict[str, int]:
    """Insert RELEASE_DATA into the tables this revision has; how many rows went into each."""
    metadata = MetaData()
    metadata.reflect(sync)
    counts = {}
    for table_name, rows in RELEASE_DATA.items():
        table = metadata.tables.get(table_name)
        if table is None:
            continue
        required = {c.name for c in table.columns if not c.nullable and c.server_default is None}
        missing = required - set(rows[0]) - {"id"}
        assert not missing, f"{table_name}: add values for {sorted(missing)} to RELEASE_DATA"
        stored = [{name: value for name, value in row.items() if name in table.columns} for row in rows]
        for row in stored:
            for name, value in row.items():
                if isinstance(value, (dict, list)) and not isinstance(table.columns[name].type, JSON):
                    row[name] = json.dumps(value)
        sync.execute(table.insert(), stored)
        counts[table_name] = len(stored)
    return counts


@pytest.mark.parametrize("revision", EARLIER)
async def test_upgrading_from_each_earlier_revision_keeps_the_data_and_the_code_reads_it(
    database_url: str, revision: str
) -> None:
    from alembic import command

    from gpustack.schemas.model_files import ModelFilePublic
    from gpustack.schemas.models import ModelInstancePublic, ModelPublic
    from gpustack.schemas.users import UserPublic
    from gpustack.schemas.workers import WorkerPublic
    from gpustack.server.db.engine import session_factory
    from gpustack.server.db.migrate import alembic_config
    from gpustack.server.db.tables import (
        ApiKeyRow,
        ModelFileRow,
        ModelInstanceRow,
        ModelRow,
        UserRow,
        WorkerRow,
    )

    engine = create_engine(database_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))
            counts = await connection.run_sync(_fill)
        if engine.dialect.name == "postgresql":  # rows were given their ids: move the sequences past them
            async with engine.begin() as connection:
                for table in counts:
                    sequence = f"pg_get_serial_sequence('{table}', 'id')"
                    await connection.execute(
                        text(f"SELECT setval({sequence}, (SELECT max(id) FROM {table}))")
                    )
        await upgrade_to_head(engine)
        async with engine.connect() as connection:
            for table, count in counts.items():
                assert (
                    await connection.execute(text(f"SELECT count(*) FROM {table}"))
                ).scalar_one() == count, table
        # The code of this release reads every row as its API shows it.
        async with session_factory(engine)() as session:
            for row_type, public in (
                (UserRow, UserPublic), (WorkerRow, WorkerPublic), (ModelRow, ModelPublic),
                (ModelInstanceRow, ModelInstancePublic), (ModelFileRow, ModelFilePublic),
            ):  # fmt: skip
                for row in (await session.execute(select(row_type))).scalars():
                    public.model_validate(row)
            instance = (await session.execute(select(ModelInstanceRow))).scalar_one()
            assert instance.name == "m-1" and instance.worker_id == 1 and instance.gpu_indexes == [0]
            assert instance.subordinate_workers == []
            worker = (await session.execute(select(WorkerRow))).scalar_one()
            assert worker.user_labels == {"rack": "a1"}
            assert (await session.execute(select(ApiKeyRow))).scalar_one().access_key == "a" * 16
            # New rows never take an id an old one had (SQLite AUTOINCREMENT, PostgreSQL sequences).
            session.add(
                ModelInstanceRow(
                    name="m-2",
                    model_id=1,
                    model_name="m",
                    state="pending",
                    state_message="",
                    state_changed_at=_NOW,
                    restart_count=0,
                    gpu_indexes=[],
                    version=1,
                    subordinate_workers=[],
                )  # fmt: skip
            )
            await session.commit()
            ids = sorted((await session.execute(select(ModelInstanceRow.id))).scalars())
        assert ids[0] == 7 and ids[1] > 7
    finally:
        await engine.dispose()
