"""`gpustack reset-admin-password`: give the administrator a new password, through the database."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from sqlalchemy import inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from gpustack.cli.options import add_flags
from gpustack.config import ConfigError, load_config
from gpustack.server import security
from gpustack.server.db.engine import create_engine, session_factory, sqlite_file
from gpustack.server.db.tables import UserRow


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "reset-admin-password",
        help="Reset the administrator's password (run it on the server machine).",
        description="Sets a new random password for the administrator and prints it; it must be changed at "
        "the next login. Reads the same --data-dir, --database-url and --config-file as `gpustack start`.",
    )
    add_flags(parser, ["config_file", "data_dir", "database_url", "server_url"])
    parser.add_argument("--username", default="admin", help="Which administrator. Default: admin.")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    values = {k: v for k, v in vars(args).items() if k not in ("username", "handler", "command")}
    # --server-url is accepted for the FAQ's sake; the reset goes to the database the server uses.
    values.pop("server_url", None)
    try:
        config = load_config(values, os.environ)
    except ConfigError as exc:
        print(f"gpustack reset-admin-password: {exc}", file=sys.stderr)
        return 2
    try:
        password = asyncio.run(_reset(config.database_url, args.username))
    except LookupError as exc:
        print(f"gpustack reset-admin-password: {exc}", file=sys.stderr)
        return 1
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        print(
            f"gpustack reset-admin-password: cannot use the database at {_shown(config.database_url)}: "
            f"{reason[0] if reason else type(exc).__name__}",
            file=sys.stderr,
        )
        return 1
    print(f"The password of {args.username!r} is now: {password}")
    print("Log in with it; you will be asked to choose a new one.")
    return 0


def _shown(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def _missing(where: str) -> LookupError:
    return LookupError(
        f"no GPUStack database at {where}; pass the --data-dir of the server (or its --database-url)"
    )


async def _reset(database_url: str, username: str) -> str:
    database = sqlite_file(database_url)
    # SQLite would create an empty database (and fail in a directory that does not exist): look first.
    if database is not None and not database.is_file():
        raise _missing(str(database))
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        if "users" not in tables:
            raise _missing(str(database) if database is not None else _shown(database_url))
        async with session_factory(engine)() as session:
            user = (await session.execute(select(UserRow).where(UserRow.username == username))).scalar()
            if user is None or not user.is_admin:
                raise LookupError(f"no administrator named {username!r}; use --username")
            password = security.generate_password()
            user.hashed_password = await security.hash_password(password)
            user.require_password_change = True
            await session.commit()
        return password
    finally:
        await engine.dispose()
