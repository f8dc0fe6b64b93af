"""`gpustack start`: run the server (with its embedded worker), or a worker joining a server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from gpustack import __version__
from gpustack.cli.options import add_flags
from gpustack.config import Config, ConfigError, load_config
from gpustack.log import setup_logging
from gpustack.server.start_refused import StartRefused
from gpustack.utils.data_dir import StorageError, prepare_data_dir
from gpustack.utils.data_dir_lock import DataDirBusy, DataDirLock
from gpustack.utils.uvicorn_server import PortUnavailable

logger = logging.getLogger("gpustack")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "start",
        help="Run the GPUStack server, or a worker with --server-url.",
        description="Run the GPUStack server (and an embedded worker), or a worker joining a server with "
        "--server-url and --token. Every flag can also be set in the --config-file YAML (snake_case keys) "
        "or as a GPUSTACK_<FLAG_NAME> environment variable; the command line wins, then the file, then "
        "the environment.",
    )
    add_flags(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(vars(args), os.environ)
        if not config.is_server and not config.token:
            raise ConfigError(
                "--token: required with --server-url (or GPUSTACK_TOKEN, or --token-file); "
                "the server keeps it in <data-dir>/token"
            )
    except ConfigError as exc:
        print(f"gpustack start: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.debug)
    if args.token is not None:
        logger.warning(
            "--token on the command line is visible to every local user (ps); "
            "use the GPUSTACK_TOKEN environment variable or --token-file instead"
        )
    lock = DataDirLock(config.data_dir)
    try:
        # Before anything starts: a read-only or full data dir, or one that another process is using
        # (a second start would take over its worker and start its engines twice), stops here with one line.
        database = _sqlite_file(config) if config.is_server else None
        prepare_data_dir(config.data_dir, config.log_dir, config.cache_dir, database)
        lock.acquire()
    except (StorageError, DataDirBusy) as exc:
        print(f"gpustack start: {exc}", file=sys.stderr)
        return 1
    try:
        asyncio.run(_run(config))
    except (PortUnavailable, StorageError, StartRefused) as exc:
        print(f"gpustack start: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        lock.release()
    return 0


def _sqlite_file(config: Config) -> Path | None:
    from gpustack.server.db.engine import sqlite_file  # loads SQLAlchemy: only when starting

    return sqlite_file(config.database_url)


def _local_server_url(config: Config) -> str:
    host = config.host if config.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.ssl_certfile else "http"
    return f"{scheme}://{host}:{config.port}"


async def _run(config: Config) -> None:
    # Imported here so that `gpustack version` and bad flags answer without loading the server.
    from gpustack.server.server import Server
    from gpustack.worker.agent import Worker
    from gpustack.worker.embedded import EmbeddedWorker

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except NotImplementedError:  # Windows: Ctrl+C arrives as KeyboardInterrupt
            pass
    logger.info("gpustack %s starting (data dir %s)", __version__, config.data_dir)
    runs = []
    if config.is_server:
        server = Server(config)
        ctx = await server.prepare()
        runs.append(asyncio.create_task(server.serve(stop), name="server"))
        if not config.disable_worker:
            embedded = EmbeddedWorker(config, _local_server_url(config), ctx.cluster_token)
            runs.append(asyncio.create_task(embedded.run(stop), name="worker"))
    else:
        assert config.server_url and config.token
        runs.append(
            asyncio.create_task(Worker(config, config.server_urls, config.token).run(stop), name="worker")
        )
    done, _ = await asyncio.wait(runs, return_when=asyncio.FIRST_COMPLETED)
    stop.set()  # one part ending (or failing) ends the process
    results = await asyncio.gather(*runs, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result
    logger.info("gpustack stopped")
