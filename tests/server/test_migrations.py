"""Migrations own the schema: they build it from nothing, are safe to re-run, and keep the data."""

from __future__ import annotations

from sqlalchemy import inspect, select, text

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
