"""The leader lease: one row in the database says which server runs the scheduler and controllers.

Why a lease row and not an advisory lock. A PostgreSQL advisory lock belongs to one connection: it frees
itself the moment a dead server's connection closes, but it cannot be checked from the other connections
a server's controllers use, it silently breaks behind a transaction-pooling proxy (PgBouncer), and it only
exists on PostgreSQL. A row works through any pool and on every database, carries who holds it (for the
messages people read) and a term that grows with each new holder, and lets every controller transaction
fence itself:

- The holder renews the lease every RENEW_SECONDS; it expires TTL_SECONDS after the last renewal, by the
  database's clock (servers' clocks need not agree). Another server may take it only once it has expired,
  so a dead leader is replaced within TTL_SECONDS plus one attempt (about 12 s).
- Every transaction of the leader's controllers first reads the lease row FOR KEY SHARE, requiring its
  own holder id and term (`fence_sessions`). A takeover reads the row FOR UPDATE, which waits for those
  transactions to end, and changes holder and term, after which they find no row and stop (`NotLeader`).
  So two servers' controllers never write at the same time, even when an old leader was paused past its
  lease and has not noticed yet. The holder's own renewal (a plain UPDATE) does not conflict with its
  fences, so a long controller transaction does not stop it from renewing.

On SQLite and MySQL, which cannot carry events between servers, the lease keeps a second server from
starting at all (`exclusive`).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from gpustack.server.db.tables import LeaderLeaseRow

logger = logging.getLogger(__name__)

LEASE_NAME = "controllers"
TTL_SECONDS = 10.0
RENEW_SECONDS = 2.0
_FENCE = "leader_fence"


class NotLeader(RuntimeError):
    """This server no longer holds the lease: its controllers must stop writing."""


@dataclass(frozen=True)
class Candidate:
    """This server process, as the lease records it."""

    id: str  # random per process: two processes never share it, even with a copied data dir
    host: str
    data_dir: str
    address: str  # where its API listens, for people
    pid: int

    @classmethod
    def of_this_process(cls, process_id: str, data_dir: str, address: str) -> Candidate:
        return cls(process_id, socket.gethostname(), data_dir, address, os.getpid())


@dataclass(frozen=True)
class Holder:
    """Who holds the lease, as stored."""

    id: str
    term: int
    host: str
    data_dir: str
    address: str
    pid: int
    acquired_at: datetime
    expires_at: datetime

    def describe(self) -> str:
        return f"the server at {self.address} on {self.host} (pid {self.pid}, data dir {self.data_dir})"


def _holder(row: LeaderLeaseRow) -> Holder:
    return Holder(
        row.holder,
        row.term,
        row.holder_host,
        row.holder_data_dir,
        row.holder_address,
        row.holder_pid,
        row.acquired_at,
        row.expires_at,
    )


async def database_now(session: AsyncSession) -> datetime:
    """The database's clock on PostgreSQL (the one every server shares); elsewhere there is one server,
    and its own clock is the clock."""
    if session.get_bind().dialect.name == "postgresql":
        value = (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
        assert isinstance(value, datetime)
        return value.astimezone(timezone.utc)
    return datetime.now(timezone.utc)


class Lease:
    """Acquire, renew and release the leader lease for one candidate."""

    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], me: Candidate, ttl: float = TTL_SECONDS
    ) -> None:
        self.sessions = sessions
        self.me = me
        self.ttl = timedelta(seconds=ttl)

    async def holder(self) -> Holder | None:
        async with self.sessions() as session:
            row = await session.get(LeaderLeaseRow, LEASE_NAME)
            return _holder(row) if row is not None else None

    async def acquire(self) -> int | Holder:
        """Take the lease if nobody holds it, it has expired, or it is this server's own (this process's,
        or an earlier process's on this host and data dir: the data dir lock says that one is gone).
        Returns the new term, or who holds it."""
        query = select(LeaderLeaseRow).where(LeaderLeaseRow.name == LEASE_NAME)
        async with self.sessions() as session:
            # A look without a lock first: a follower asks every second, and mostly the answer is no.
            seen = (await session.execute(query)).scalar_one_or_none()
            if seen is not None and seen.expires_at > await database_now(session) and not self._is_mine(seen):
                return _holder(seen)
            # FOR UPDATE: waits for the holder's fenced transactions to end, and keeps theirs from starting.
            row = (
                await session.execute(query.with_for_update().execution_options(populate_existing=True))
            ).scalar_one_or_none()
            now = await database_now(session)
            if row is None:
                row = LeaderLeaseRow(name=LEASE_NAME, term=0)
                session.add(row)
            elif row.expires_at > now and not self._is_mine(row):
                return _holder(row)
            row.term += 1
            row.holder = self.me.id
            row.holder_host = self.me.host
            row.holder_data_dir = self.me.data_dir
            row.holder_address = self.me.address
            row.holder_pid = self.me.pid
            row.acquired_at = row.renewed_at = now
            row.expires_at = now + self.ttl
            term = row.term
            try:
                await session.commit()
            except IntegrityError:
                # Another server inserted the first row at the same moment: it holds the lease.
                await session.rollback()
                holder = await self.holder()
                if holder is None:
                    raise
                return holder
            return term

    def _is_mine(self, row: LeaderLeaseRow) -> bool:
        """This process (which stepped down, and may lead again at once: its old term is fenced off by the
        new one), or its earlier process on this host and data dir."""
        return row.holder == self.me.id or (
            row.holder_host == self.me.host and row.holder_data_dir == self.me.data_dir
        )

    async def renew(self, term: int) -> bool:
        """Extend the lease; False when another server has taken it."""
        async with self.sessions() as session:
            now = await database_now(session)
            result = await session.execute(
                update(LeaderLeaseRow)
                .where(
                    LeaderLeaseRow.name == LEASE_NAME,
                    LeaderLeaseRow.holder == self.me.id,
                    LeaderLeaseRow.term == term,
                )
                .values(renewed_at=now, expires_at=now + self.ttl)
            )
            await session.commit()
            return bool(getattr(result, "rowcount", 0))

    async def release(self, term: int) -> None:
        """Let another server take over at once (a clean stop) instead of after the lease expires."""
        async with self.sessions() as session:
            now = await database_now(session)
            await session.execute(
                update(LeaderLeaseRow)
                .where(
                    LeaderLeaseRow.name == LEASE_NAME,
                    LeaderLeaseRow.holder == self.me.id,
                    LeaderLeaseRow.term == term,
                )
                .values(expires_at=now)
            )
            await session.commit()


@dataclass(frozen=True)
class Fence:
    holder: str
    term: int


def fenced(
    sessions: async_sessionmaker[AsyncSession], holder: str, term: int
) -> async_sessionmaker[AsyncSession]:
    """Sessions like `sessions` whose every transaction first proves that `holder` still leads with
    `term`, holding the lease row (FOR KEY SHARE) until it ends; otherwise it raises NotLeader.
    PostgreSQL only: on the other databases a single server runs."""
    _install()
    info = {**sessions.kw.get("info", {}), _FENCE: Fence(holder, term)}
    return async_sessionmaker(class_=sessions.class_, **{**sessions.kw, "info": info})


def _check_fence(session: Session, _transaction: SessionTransaction, connection: Connection) -> None:
    fence: Fence | None = session.info.get(_FENCE)
    if fence is None:
        return
    held = connection.execute(
        select(LeaderLeaseRow.term)
        .where(
            LeaderLeaseRow.name == LEASE_NAME,
            LeaderLeaseRow.holder == fence.holder,
            LeaderLeaseRow.term == fence.term,
        )
        .with_for_update(read=True, key_share=True)
    ).first()
    if held is None:
        raise NotLeader(f"this server's lease (term {fence.term}) was taken over by another server")


def _install() -> None:
    if not event.contains(Session, "after_begin", _check_fence):
        event.listen(Session, "after_begin", _check_fence)


def describe_refusal(holder: Holder, database: str) -> str:
    """Why a second server may not start on a database that cannot carry events between servers."""
    until = holder.expires_at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (
        f"another gpustack server already uses the database {database}: {holder.describe()}. "
        "Several servers need PostgreSQL (--database-url postgresql://...), which carries changes between "
        f"them; on {database.split(':', 1)[0]} only one server may run. If that server has stopped, "
        f"start this one after {until}, when its lease expires"
    )
