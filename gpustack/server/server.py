"""Running a server: data dir, database and migrations, first admin, controllers and the HTTP listener."""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.exc import StaleDataError

from gpustack.config import Config
from gpustack.metrics.server import ServerMetrics
from gpustack.server import security
from gpustack.server.app import create_app
from gpustack.server.bus import EventBus, EventType
from gpustack.server.context import ServerContext
from gpustack.server.controllers import instances as instance_controller
from gpustack.server.controllers import models as model_controller
from gpustack.server.controllers import workers as worker_controller
from gpustack.server.controllers.loop import reconcile_forever
from gpustack.server.controllers.scheduler import schedule_pending
from gpustack.server.db import events
from gpustack.server.db.engine import create_engine, session_factory, sqlite_file
from gpustack.server.db.migrate import upgrade_to_head
from gpustack.server.db.tables import UserRow
from gpustack.server.requirements import Requirements
from gpustack.sources.base import SourceSettings
from gpustack.utils.data_dir import prepare_data_dir
from gpustack.utils.files import read_or_create, write_private
from gpustack.utils.uvicorn_server import bind_socket, make_server

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


def read_or_create_secret(path: Path, given: str | None = None) -> str:
    return given or read_or_create(path, lambda: secrets.token_hex(16))


async def ensure_admin(engine: AsyncEngine, config: Config) -> None:
    """On first start, create the admin; a generated password goes to <data-dir>/initial_admin_password."""
    sessions = session_factory(engine)
    async with sessions() as session:
        if (await session.execute(select(func.count()).select_from(UserRow))).scalar_one() > 0:
            return
        password = config.bootstrap_password or security.generate_password()
        session.add(
            UserRow(
                username=ADMIN_USERNAME,
                full_name="Default administrator",
                hashed_password=await security.hash_password(password),
                is_admin=True,
                # A password nobody chose must be replaced; one the operator chose need not be.
                require_password_change=config.bootstrap_password is None,
            )
        )
        await session.commit()
    if config.bootstrap_password is None:
        path = Path(config.data_dir) / "initial_admin_password"
        write_private(path, password)
        logger.info("created user %r; its initial password is in %s", ADMIN_USERNAME, path)
    else:
        logger.info("created user %r with the bootstrap password", ADMIN_USERNAME)


class Server:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ctx: ServerContext | None = None

    async def prepare(self) -> ServerContext:
        config = self.config
        # Start-up, nothing served yet: blocking file calls are fine. Refuses a read-only or full data dir.
        prepare_data_dir(config.data_dir, config.log_dir, config.cache_dir, sqlite_file(config.database_url))
        data = Path(config.data_dir)
        token = read_or_create_secret(data / "token", config.token)
        session_secret = read_or_create_secret(data / "session_secret")
        engine = create_engine(config.database_url)
        await upgrade_to_head(engine)
        await ensure_admin(engine, config)
        events.install()
        bus = EventBus()
        sessions = session_factory(engine)
        sessions.configure(info={"bus": bus})
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        self.ctx = ServerContext(
            config=config,
            engine=engine,
            sessions=sessions,
            bus=bus,
            http=http,
            cluster_token=token,
            session_secret=session_secret,
            requirements=Requirements(ray_enabled=config.enable_ray, settings=SourceSettings.of(config)),
            metrics=None if config.disable_metrics else _metrics(engine, bus),
        )
        return self.ctx

    async def serve(self, stop: asyncio.Event) -> None:
        ctx = self.ctx or await self.prepare()
        sock = bind_socket(self.config.host, self.config.port, "--port")
        server = make_server(
            create_app(ctx),
            ssl_keyfile=self.config.ssl_keyfile,
            ssl_certfile=self.config.ssl_certfile,
            trusted_proxies=self.config.trusted_proxies,
        )
        controllers = [
            asyncio.create_task(coro, name=name)
            for name, coro in (
                ("replicas", reconcile_forever("replicas", lambda: model_controller.sync_replicas(ctx), 5.0)),
                ("scheduler", _scheduler_loop(ctx)),
                (
                    "heartbeats",
                    reconcile_forever("heartbeats", lambda: worker_controller.check_heartbeats(ctx), 1.0),
                ),
                ("probes", reconcile_forever("probes", lambda: worker_controller.probe_workers(ctx), 5.0)),
                (
                    "restarts",
                    reconcile_forever("restarts", lambda: instance_controller.restart_and_expire(ctx), 1.0),
                ),
                ("bus-wakeups", _wake_on_changes(ctx)),
            )
        ]
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="server-http")
        logger.info("server listening on %s:%d", self.config.host, self.config.port)
        try:
            await _until_stop_or_exit(stop, serving)
        finally:
            server.should_exit = True
            await _cancel_all(controllers)
            await serving
            await ctx.http.aclose()
            try:
                await asyncio.wait_for(ctx.engine.dispose(), 10)
            except asyncio.TimeoutError:
                logger.warning("the database connections did not close within 10s")


def _metrics(engine: AsyncEngine, bus: EventBus) -> ServerMetrics:
    from gpustack.metrics.hooks import time_bus, time_database

    metrics = ServerMetrics()
    time_database(engine, metrics)
    time_bus(bus, metrics)
    return metrics


async def _cancel_all(tasks: list[asyncio.Task]) -> None:
    """Cancel and wait, bounded: a task that swallows one cancellation (a driver mid-query can) is
    cancelled again rather than holding up shutdown."""
    pending = set(tasks)
    for _ in range(3):
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=5)
        if not pending:
            return
    logger.warning("controllers still running at shutdown: %s", ", ".join(t.get_name() for t in pending))


async def _until_stop_or_exit(stop: asyncio.Event, serving: asyncio.Task) -> None:
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({waiter, serving}, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


async def _scheduler_loop(ctx: ServerContext) -> None:
    await reconcile_forever(
        "scheduler", lambda: schedule_pending(ctx, ctx.requirements), 10.0, ctx.schedule_wanted
    )


async def _wake_on_changes(ctx: ServerContext) -> None:
    """Replica counts follow model and instance changes at once instead of on the next tick."""
    while True:
        async with ctx.bus.subscribe("models", "model_instances") as subscription:
            try:
                while True:
                    event = await subscription.get()
                    deleted = event is not None and event.type is EventType.DELETED
                    while (more := await subscription.get(timeout=0.05)) is not None:
                        deleted = deleted or more.type is EventType.DELETED
                    try:
                        await model_controller.sync_replicas(ctx)
                    except StaleDataError:
                        pass  # a concurrent change; the next event or the timer reconciles again
                    except Exception:
                        logger.exception("replicas: reconcile after a change failed; the timer will retry")
                    if deleted:
                        ctx.schedule_wanted.set()  # freed memory may let a pending instance fit
            except OverflowError:
                continue
