"""Whether the database accepts a write right now, for /readyz: a real committed write, at most once a second.

The write rewrites the one row of alembic_version with its own value. It changes nothing, yet it is a real
write on every database this server supports (SQLite appends a WAL frame, PostgreSQL a new row version), so a
full disk, a read-only file system or a read-only replica fails it; and it needs no table of its own."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gpustack.server.storage_full import is_out_of_space

logger = logging.getLogger(__name__)

_STATEMENT = text("UPDATE alembic_version SET version_num = version_num")


class WriteProbe:
    """One probe in flight at a time, its answer kept for `ttl` seconds; callers wait at most `timeout`."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], ttl: float = 1.0, timeout: float = 5.0
    ) -> None:
        self.sessions = sessions
        self.ttl = ttl
        self.timeout = timeout
        self._problem: str | None = None
        self._checked_at = float("-inf")
        self._running: asyncio.Task[str | None] | None = None

    async def problem(self) -> str | None:
        """None when the database took a write; otherwise why not, in words for an operator."""
        if time.monotonic() - self._checked_at < self.ttl:
            return self._problem
        if self._running is None or self._running.done():
            self._running = asyncio.create_task(self._probe(), name="database-write-probe")
        try:
            # Shielded: a caller that stops waiting leaves the probe to finish and record its answer.
            return await asyncio.wait_for(asyncio.shield(self._running), self.timeout)
        except asyncio.TimeoutError:
            return f"the database did not accept a write within {self.timeout:g}s (busy or stalled)"

    async def _probe(self) -> str | None:
        try:
            async with self.sessions() as session:
                await session.execute(_STATEMENT)
                await session.commit()
            problem = None
        except Exception as exc:  # noqa: BLE001 - any failure to write means not ready, said in words
            if is_out_of_space(exc):
                problem = "the database cannot be written: its disk is full; free space on it"
            else:
                problem = f"the database cannot be written: {_first_line(exc)}"
        if problem != self._problem:
            if problem:
                logger.warning("not ready: %s", problem)
            else:
                logger.info("the database accepts writes again")
        self._problem = problem
        self._checked_at = time.monotonic()
        return problem


def _first_line(exc: Exception) -> str:
    """The driver's own words (SQLAlchemy adds its statement and a link below them)."""
    words = str(getattr(exc, "orig", None) or exc).strip()
    return words.splitlines()[0] if words else type(exc).__name__
