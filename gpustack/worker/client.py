"""The worker's side of the server API: register, heartbeat, watch assignments, report instance states."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from gpustack.schemas.model_files import ModelFileClaim, ModelFileStateUpdate
from gpustack.schemas.models import ModelInstanceStateUpdate
from gpustack.schemas.workers import WorkerRegistered, WorkerRegistration, WorkerStatusReport
from gpustack.worker.failover import FailoverClient


class ServerError(RuntimeError):
    """The server answered, but not with success; `status_code` says how."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class ServerClient:
    """Registers with the cluster token, then uses the worker's own credential for everything else.
    Given the URLs of several servers of one cluster, it moves on to the next when one cannot be reached
    (any server accepts the token and the credential: they share their secrets)."""

    def __init__(self, server_urls: str | Sequence[str], token: str, verify: bool = True) -> None:
        self._token = token
        self.credential: str | None = None
        self._http = FailoverClient(server_urls, httpx.Timeout(15.0), verify=verify)

    @property
    def server_url(self) -> str:
        """The server in use now."""
        return self._http.current

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential or self._token}"}

    async def aclose(self) -> None:
        await self._http.aclose()

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            # An empty answer (a proxy's, or a server that died mid-reply) still gets words.
            message = str(message).strip() or response.reason_phrase or "the server gave no details"
            raise ServerError(
                response.status_code,
                f"{response.request.method} {response.request.url.path}: "
                f"HTTP {response.status_code}: {message}",
            )

    async def register(self, registration: WorkerRegistration) -> WorkerRegistered:
        response = await self._http.post(
            "/v2/workers/register",
            json=registration.model_dump(mode="json"),
            headers={"Authorization": f"Bearer {self._token}"},
        )
        self._check(response)
        registered = WorkerRegistered.model_validate(response.json())
        self.credential = registered.credential
        return registered

    async def report_status(self, worker_id: int, report: WorkerStatusReport) -> None:
        response = await self._http.put(
            f"/v2/workers/{worker_id}/status", json=report.model_dump(mode="json"), headers=self._auth()
        )
        self._check(response)

    async def report_instance(self, instance_id: int, update: ModelInstanceStateUpdate) -> None:
        response = await self._http.put(
            f"/v2/model-instances/{instance_id}/state",
            json=update.model_dump(mode="json", exclude_none=True),
            headers=self._auth(),
        )
        self._check(response)

    async def get_model(self, model_id: int) -> dict[str, Any]:
        response = await self._http.get(f"/v2/models/{model_id}", headers=self._auth())
        self._check(response)
        result: dict[str, Any] = response.json()
        return result

    async def claim_model_file(self, claim: ModelFileClaim) -> dict[str, Any]:
        """Record that this worker holds (or fetches) a model's files; the ModelFile, created if new."""
        response = await self._http.post(
            "/v2/model-files", json=claim.model_dump(mode="json", exclude_none=True), headers=self._auth()
        )
        self._check(response)
        result: dict[str, Any] = response.json()
        return result

    async def report_model_file(self, file_id: int, update: ModelFileStateUpdate) -> None:
        response = await self._http.put(
            f"/v2/model-files/{file_id}/state", json=update.model_dump(mode="json"), headers=self._auth()
        )
        self._check(response)

    async def watch_instances(self, worker_id: int) -> AsyncIterator[dict[str, Any]]:
        """Events for this worker's instances: a snapshot first, then changes (see server/api/watch.py)."""
        async with self._http.stream(
            "GET",
            "/v2/model-instances",
            params={"worker_id": worker_id, "watch": "true"},
            headers=self._auth(),
            # Keepalives arrive every 15 s; a silent minute means the connection is dead.
            timeout=httpx.Timeout(15.0, read=60.0),
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                self._check(response)
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)
