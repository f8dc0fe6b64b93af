"""What every server of a cluster must agree on at start: the schema, the first admin and the secrets,
settled by one starting server at a time.

The secrets live in the database (table cluster_secrets), so that every server on it has the same cluster
token (workers join any server with it) and the same session secret (a worker's credential, derived from
it, works at every server). The first server to start on a database copies its data dir's `token` and
`session_secret` files in, so that the workers which joined it before keep working, or generates them.
Each server then writes the stored values back into its own data dir's files, where operators and
`gpustack start --token-file` find the token.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gpustack.server.db.tables import ClusterSecretRow
from gpustack.server.start_refused import StartRefused
from gpustack.utils.files import write_private

logger = logging.getLogger(__name__)

CLUSTER_TOKEN = "cluster_token"
SESSION_SECRET = "session_secret"
_FILES = {CLUSTER_TOKEN: "token", SESSION_SECRET: "session_secret"}
# Any number will do, as long as nothing else in the database uses it for an advisory lock.
_START_LOCK = 0x6770757374616B  # "gpustak"


@dataclass(frozen=True)
class ClusterSecrets:
    cluster_token: str
    session_secret: str


@asynccontextmanager
async def one_server_at_a_time(engine: AsyncEngine) -> AsyncIterator[None]:
    """Servers starting together on one PostgreSQL migrate, create the admin and the secrets in turn,
    not at once (they would both create the same tables and rows). Elsewhere one server runs anyway."""
    if engine.dialect.name != "postgresql":
        yield
        return
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _START_LOCK})
        await connection.commit()
        try:
            yield
        finally:
            # Unlock before the connection goes back to the pool, where the lock would otherwise stay.
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _START_LOCK})
            await connection.commit()


async def load_secrets(
    sessions: async_sessionmaker[AsyncSession], data_dir: Path, given_token: str | None, shared: bool
) -> ClusterSecrets:
    """The cluster's secrets from the database, stored there first if they are not yet.

    `given_token` (--token): used when none is stored. When another is stored, a database only this
    server can use takes the given one (the command line wins, as it always did); a shared one refuses
    to start, since every server of a cluster must accept the same token.
    """
    async with sessions() as session:
        stored = {row.name: row for row in (await session.execute(select(ClusterSecretRow))).scalars()}
        values: dict[str, str] = {}
        for name, file_name in _FILES.items():
            row = stored.get(name)
            wanted = given_token if name == CLUSTER_TOKEN else None
            if row is None:
                values[name] = wanted or _read(data_dir / file_name) or secrets.token_hex(16)
                session.add(ClusterSecretRow(name=name, value=values[name]))
                continue
            values[name] = row.value
            if wanted and wanted != row.value:
                if shared:
                    raise StartRefused(
                        "--token: the cluster token stored in the database is another one; every server of "
                        "a cluster accepts the same token. Start this server without --token (it then uses "
                        f"the stored one and writes it to {data_dir / file_name}), or give the same token"
                    )
                logger.warning(
                    "the cluster token changes to the one given (--token); workers join with it now"
                )
                row.value = values[name] = wanted
        try:
            await session.commit()
        except IntegrityError:
            # Only on a database without the start lock: another server stored them first. Use theirs.
            await session.rollback()
            return await load_secrets(sessions, data_dir, given_token, shared)
    for name, file_name in _FILES.items():
        _keep_in_data_dir(data_dir / file_name, values[name], name)
    return ClusterSecrets(values[CLUSTER_TOKEN], values[SESSION_SECRET])


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _keep_in_data_dir(path: Path, value: str, name: str) -> None:
    current = _read(path)
    if current == value:
        return
    if current is not None:
        consequence = (
            "workers that were given the old token must be given this one"
            if name == CLUSTER_TOKEN
            else "workers registered with the old one register again with the cluster token"
        )
        logger.warning(
            "%s held another %s than the cluster's (stored in the database); it now holds the cluster's: %s",
            path,
            name.replace("_", " "),
            consequence,
        )
    write_private(path, value)
