"""Running a server: data dir, database and migrations, first admin, secrets, the HTTP listener, and the
controllers while this server leads (several servers may share one PostgreSQL; see leader_lease.py)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.exc import StaleDataError

from gpustack.config import Config
from gpustack.metrics.server import ServerMetrics
from gpustack.server import security
from gpustack.server.app import create_app
from gpustack.server.bus import Event, EventBus, EventType
from gpustack.server.bus_postgres import PostgresEventBus
from gpustack.server.cluster_setup import ClusterSecrets, load_secrets, one_server_at_a_time
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
from gpustack.server.invalidation import clear_on_credential_changes
from gpustack.server.leader import Leadership, Term
from gpustack.server.leader_lease import Candidate, Holder, Lease, NotLeader, describe_refusal, fenced
from gpustack.server.requirements import Requirements
from gpustack.server.start_refused import StartRefused
from gpustack.sources.base import SourceSettings
from gpustack.utils.data_dir import prepare_data_dir
from gpustack.utils.files import write_private
from gpustack.utils.uvicorn_server import bind_socket, make_server

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"


async def ensure_admin(engine: AsyncEngine, config: Config) -> None:
    """On first start, create the admin; a generated password goes to <data-dir>/initial_admin_password
    (of the server that created it, when several start on one database)."""
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
        self.leadership: Leadership | None = None
        # This process, to the lease and to the other servers' events (a restart is a new process).
        self.process_id = secrets.token_hex(16)
        self._lease: Lease | None = None
        self._first_term: int | None = None

    async def prepare(self) -> ServerContext:
        """Everything but listening. Raises StartRefused when this server must not start (another one
        already uses a database that cannot be shared, or it was given another cluster's token)."""
        config = self.config
        # Start-up, nothing served yet: blocking file calls are fine. Refuses a read-only or full data dir.
        prepare_data_dir(config.data_dir, config.log_dir, config.cache_dir, sqlite_file(config.database_url))
        engine = create_engine(config.database_url)
        try:
            bus, shared_secrets = await self._join(engine)
        except BaseException:
            await engine.dispose()
            raise
        sessions = session_factory(engine)
        sessions.configure(info={"bus": bus})
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200))
        self.ctx = ServerContext(
            config=config,
            engine=engine,
            sessions=sessions,
            bus=bus,
            http=http,
            cluster_token=shared_secrets.cluster_token,
            session_secret=shared_secrets.session_secret,
            requirements=Requirements(ray_enabled=config.enable_ray, settings=SourceSettings.of(config)),
            metrics=None if config.disable_metrics else _metrics(engine, bus),
        )
        return self.ctx

    async def _join(self, engine: AsyncEngine) -> tuple[EventBus, ClusterSecrets]:
        """Settle the schema, admin and secrets with the other servers; take the lease where only one
        server may run; start hearing the other servers' changes where several may."""
        config = self.config
        shared = engine.dialect.name == "postgresql"
        async with one_server_at_a_time(engine):
            await upgrade_to_head(engine)
            await ensure_admin(engine, config)
            found = await load_secrets(session_factory(engine), Path(config.data_dir), config.token, shared)
        events.install()
        me = Candidate.of_this_process(self.process_id, config.data_dir, _address(config))
        self._lease = Lease(session_factory(engine), me)
        if not shared:
            won = await self._lease.acquire()
            if isinstance(won, Holder):
                raise StartRefused(describe_refusal(won, make_url(config.database_url).render_as_string()))
            self._first_term = won
            return EventBus(), found
        bus = PostgresEventBus(self.process_id)
        await bus.start(engine)  # before anything subscribes: nothing committed from now on is missed
        return bus, found

    async def serve(self, stop: asyncio.Event) -> None:
        ctx = self.ctx or await self.prepare()
        assert self._lease is not None
        sock = bind_socket(self.config.host, self.config.port, "--port")
        app = create_app(ctx)
        server = make_server(
            app,
            ssl_keyfile=self.config.ssl_keyfile,
            ssl_certfile=self.config.ssl_certfile,
            trusted_proxies=self.config.trusted_proxies,
        )
        leadership = self.leadership = Leadership(self._lease, lambda term: _lead(ctx, term))
        if ctx.metrics is not None:
            ctx.metrics.gauge(
                "gpustack_server_leader",
                "1 on the server that runs the scheduler and controllers (holds the leader lease), else 0.",
                lambda: 1.0 if leadership.is_leader else 0.0,
            )
        background = [
            asyncio.create_task(leadership.run(self._first_term), name="leadership"),
            asyncio.create_task(
                clear_on_credential_changes(ctx.bus, app.state.credential_cache.clear),
                name="credential-cache",
            ),
        ]
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="server-http")
        logger.info("server listening on %s:%d", self.config.host, self.config.port)
        try:
            await _until_stop_or_exit(stop, serving)
        finally:
            server.should_exit = True
            await _cancel_all(background)  # stops the controllers and releases the lease
            await serving
            if isinstance(ctx.bus, PostgresEventBus):
                await ctx.bus.close()
            ctx.probes.close()
            await ctx.http.aclose()
            try:
                await asyncio.wait_for(ctx.engine.dispose(), 10)
            except asyncio.TimeoutError:
                logger.warning("the database connections did not close within 10s")


def _address(config: Config) -> str:
    """Where this server's API listens, as people would reach it."""
    host = socket.gethostname() if config.host in ("0.0.0.0", "::", "") else config.host
    return f"{host}:{config.port}"


def _controllers(ctx: ServerContext) -> list[tuple[str, Coroutine[Any, Any, None]]]:
    return [
        ("replicas", reconcile_forever("replicas", lambda: model_controller.sync_replicas(ctx), 5.0)),
        ("scheduler", _scheduler_loop(ctx)),
        ("heartbeats", reconcile_forever("heartbeats", lambda: worker_controller.check_heartbeats(ctx), 1.0)),
        ("probes", reconcile_forever("probes", lambda: worker_controller.probe_workers(ctx), 5.0)),
        ("restarts", reconcile_forever("restarts", lambda: instance_controller.restart_and_expire(ctx), 1.0)),
        ("bus-wakeups", _wake_on_changes(ctx)),
    ]


async def _lead(ctx: ServerContext, term: Term) -> None:
    """Run the scheduler and controllers for one term of leadership, until cancelled."""
    sessions = ctx.sessions
    if ctx.engine.dialect.name == "postgresql":
        # Every controller transaction proves this term still holds the lease, or fails with NotLeader.
        sessions = fenced(ctx.sessions, term.holder, term.number)
    # Heartbeats sent while no server led may have had nowhere to go: a worker's silence counts from
    # the start of the term, as it counts from the start of a lone server.
    leader_ctx = replace(ctx, sessions=sessions, started_at=term.began)
    tasks = [asyncio.create_task(coro, name=name) for name, coro in _controllers(leader_ctx)]
    try:
        await asyncio.gather(*tasks)
    finally:
        await _cancel_all(tasks)


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
    """Replica counts follow model and instance changes at once instead of on the next tick, and the
    scheduler wakes for changes that may let a pending instance fit, whichever server took them."""
    workers: dict[int, tuple[object, object]] = {}  # state and labels: what placement reads of a worker
    while True:
        async with ctx.bus.subscribe("models", "model_instances", "workers") as subscription:
            try:
                while True:
                    batch = [await subscription.get()]
                    while (more := await subscription.get(timeout=0.05)) is not None:
                        batch.append(more)
                    events = [event for event in batch if event is not None]
                    if any(event.topic != "workers" for event in events):
                        try:
                            await model_controller.sync_replicas(ctx)
                        except StaleDataError:
                            pass  # a concurrent change; the next event or the timer reconciles again
                        except NotLeader:
                            logger.info("replicas: this server no longer leads; stopping")
                        except Exception:
                            logger.exception("replicas: reconcile after a change failed; the timer retries")
                    if any(_may_let_instances_fit(event, workers) for event in events):
                        ctx.schedule_wanted.set()
            except OverflowError:
                workers.clear()
                continue


def _may_let_instances_fit(event: Event, workers: dict[int, tuple[object, object]]) -> bool:
    """Freed memory (a deletion), a new model, a worker joining, leaving, or changing state or labels."""
    if event.type is EventType.DELETED:
        workers.pop(event.data["id"], None)
        return True
    if event.topic == "models":
        return True
    if event.topic != "workers":
        return False
    seen = (event.data.get("state"), event.data.get("labels"))
    changed = workers.get(event.data["id"]) != seen
    workers[event.data["id"]] = seen
    return changed
