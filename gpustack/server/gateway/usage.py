"""Usage metering: each relayed request is added to an in-memory bucket (hour, user, API key, model), and
the buckets are written to the database in one transaction every few seconds, never one write per
request. A clean shutdown writes what is left; a crash loses at most the last interval.

A failed write (a busy database) keeps the buckets for the next attempt."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gpustack.server.db.tables import UsageRow

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class Bucket:
    hour: datetime
    user_id: int
    api_key_id: int  # 0: a browser session
    model_name: str


@dataclass
class Counts:
    requests: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.failed_requests += other.failed_requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens


def _this_hour() -> datetime:
    return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)


class UsageRecorder:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], interval: float = FLUSH_SECONDS) -> None:
        self._sessions = sessions
        self._interval = interval
        self._pending: dict[Bucket, Counts] = {}
        self._lock = asyncio.Lock()  # one write at a time (the timer and shutdown)

    def record(
        self, user_id: int, api_key_id: int, model: str, prompt: int, completion: int, failed: bool
    ) -> None:
        """Count one relayed request (in memory: no I/O)."""
        bucket = Bucket(_this_hour(), user_id, api_key_id, model)
        counts = self._pending.get(bucket)
        if counts is None:
            counts = self._pending[bucket] = Counts()
        counts.requests += 1
        counts.failed_requests += failed
        counts.prompt_tokens += prompt
        counts.completion_tokens += completion

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self) -> None:
        """Write every pending bucket in one transaction; on failure they wait for the next flush."""
        async with self._lock:
            if not self._pending:
                return
            batch, self._pending = self._pending, {}
            try:
                await self._write(batch)
            except BaseException:
                for bucket, counts in batch.items():  # merged with what came in meanwhile
                    self._pending.setdefault(bucket, Counts()).add(counts)
                raise

    async def _write(self, batch: dict[Bucket, Counts]) -> None:
        for attempt in range(3):
            try:
                async with self._sessions() as session:
                    await _add(session, batch)
                    await session.commit()
                return
            except IntegrityError:
                # Another server inserted one of these buckets between our update and insert: again,
                # now as updates.
                if attempt == 2:
                    raise

    async def run(self) -> None:
        """Flush every interval until cancelled."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("usage: could not write %d buckets, will retry: %s", self.pending, exc)


async def _add(session: AsyncSession, batch: dict[Bucket, Counts]) -> None:
    for bucket, counts in batch.items():
        result = await session.execute(
            update(UsageRow)
            .where(
                UsageRow.hour == bucket.hour,
                UsageRow.user_id == bucket.user_id,
                UsageRow.api_key_id == bucket.api_key_id,
                UsageRow.model_name == bucket.model_name,
            )
            .values(
                requests=UsageRow.requests + counts.requests,
                failed_requests=UsageRow.failed_requests + counts.failed_requests,
                prompt_tokens=UsageRow.prompt_tokens + counts.prompt_tokens,
                completion_tokens=UsageRow.completion_tokens + counts.completion_tokens,
            )
        )
        if getattr(result, "rowcount", 0) == 0:
            session.add(
                UsageRow(
                    hour=bucket.hour,
                    user_id=bucket.user_id,
                    api_key_id=bucket.api_key_id,
                    model_name=bucket.model_name,
                    requests=counts.requests,
                    failed_requests=counts.failed_requests,
                    prompt_tokens=counts.prompt_tokens,
                    completion_tokens=counts.completion_tokens,
                )
            )
            await session.flush()
