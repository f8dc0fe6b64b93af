"""What every part of a running server shares: config, database, event bus, HTTP client, secrets."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gpustack.config import Config
from gpustack.server import security
from gpustack.server.bus import EventBus
from gpustack.server.gateway.upstream import Pool
from gpustack.server.heartbeats import HeartbeatRecorder
from gpustack.server.requirements import Requirements

if TYPE_CHECKING:
    from gpustack.metrics.server import ServerMetrics


@dataclass
class ServerContext:
    config: Config
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    bus: EventBus
    http: httpx.AsyncClient
    cluster_token: str
    session_secret: str
    started_at: float = field(default_factory=time.time)
    # Set whenever something may let a pending instance fit: a model changed, a worker joined, memory freed.
    schedule_wanted: asyncio.Event = field(default_factory=asyncio.Event)
    # One replica reconcile at a time: the timer's and a change's, run side by side, both saw a model
    # short of instances and both added them (then removed the surplus).
    replicas_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Model requirements from file headers, shared by the scheduler and model evaluations.
    requirements: Requirements = field(default_factory=Requirements)
    # Kept-alive connections to the workers' /healthz, for the liveness probes.
    probes: Pool = field(default_factory=Pool)
    # None with --disable-metrics: every hook then costs one attribute check.
    metrics: ServerMetrics | None = None

    _worker_credentials: dict[int, str] = field(default_factory=dict, init=False, repr=False)
    heartbeats: HeartbeatRecorder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.heartbeats = HeartbeatRecorder(self.sessions)

    def session(self) -> AsyncSession:
        return self.sessions()

    def worker_credential(self, worker_id: int) -> str:
        """What this server presents to worker `worker_id` (the credential it gave it at registration)."""
        credential = self._worker_credentials.get(worker_id)
        if credential is None:
            credential = self._worker_credentials[worker_id] = security.worker_credential(
                self.session_secret, worker_id
            )
        return credential
