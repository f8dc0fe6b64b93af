"""Secrets: password hashes, API keys, session tokens and the cluster token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_PREFIX = "gpustack"
SESSION_COOKIE = "gpustack_session"
SESSION_TTL_SECONDS = 7 * 86400

T = TypeVar("T")

_hasher = PasswordHasher()


class HashingBusy(Exception):
    """Too many password checks are already waiting."""


class _HashingSlots:
    """Argon2 takes ~0.15 s of one core by design. It runs in threads (it releases the GIL), on at most
    half the cores at once, so that a burst of logins or guesses leaves the rest to heartbeats, watch
    streams and the gateway; beyond `max_waiting` queued checks, more are refused at once."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.waiting = 0
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            self._semaphores = {lp: s for lp, s in self._semaphores.items() if not lp.is_closed()}
            semaphore = self._semaphores[loop] = asyncio.Semaphore(max(1, (os.cpu_count() or 2) // 2))
        return semaphore

    async def run(self, function: Callable[..., T], *args: Any, bounded: bool = False) -> T:
        if bounded and self.waiting >= self.max_waiting:
            raise HashingBusy()
        self.waiting += 1
        try:
            async with self._semaphore():
                return await asyncio.to_thread(function, *args)
        finally:
            self.waiting -= 1


_hashing = _HashingSlots(max_waiting=16)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    return await _hashing.run(_hasher.hash, password)


_dummy: list[str] = []


async def dummy_hash() -> str:
    """A real hash of a random password, for checks against users that do not exist."""
    if not _dummy:
        _dummy.append(await hash_password(secrets.token_hex(16)))
    return _dummy[0]


async def verify_password(hashed: str, password: str) -> bool:
    """Check a password; raises HashingBusy when too many checks are queued already."""
    return await _hashing.run(_verify, hashed, password, bounded=True)


def generate_password(length: int = 16) -> str:
    alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass(frozen=True)
class GeneratedApiKey:
    access_key: str  # 16 hex, stored as is to find the key
    secret_key: str  # 32 hex, stored only as a hash
    value: str  # gpustack_<access>_<secret>, shown once


def generate_api_key() -> GeneratedApiKey:
    access, secret = secrets.token_hex(8), secrets.token_hex(16)
    return GeneratedApiKey(access, secret, f"{API_KEY_PREFIX}_{access}_{secret}")


def hash_secret(secret: str) -> str:
    # The secret is 128 random bits, so a fast hash is enough and keeps the gateway's check cheap.
    return hashlib.sha256(secret.encode()).hexdigest()


def split_api_key(value: str) -> tuple[str, str] | None:
    parts = value.split("_")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 16 or len(parts[2]) != 32:
        return None
    return parts[1], parts[2]


def secret_matches(hashed: str, secret: str) -> bool:
    return hmac.compare_digest(hashed, hash_secret(secret))


def new_session_token() -> str:
    """An opaque browser session token; the database keeps only `hash_secret` of it."""
    return secrets.token_urlsafe(32)


WORKER_CREDENTIAL_PREFIX = "gpustack-worker"


def worker_credential(server_secret: str, worker_id: int) -> str:
    """The credential of one worker, given at registration: `gpustack-worker_<id>_<48 hex>`.

    Derived from the server's secret rather than stored, so the server can also present it when it
    calls that worker, and no table holds a usable copy."""
    digest = hmac.new(server_secret.encode(), f"worker:{worker_id}".encode(), hashlib.sha256).hexdigest()
    return f"{WORKER_CREDENTIAL_PREFIX}_{worker_id}_{digest[:48]}"


def worker_id_of(value: str) -> int | None:
    """The worker id a credential names, or None when it does not look like one."""
    parts = value.split("_")
    if len(parts) != 3 or parts[0] != WORKER_CREDENTIAL_PREFIX or len(parts[2]) != 48:
        return None
    if not parts[1].isdigit() or len(parts[1]) > 18:
        return None
    return int(parts[1])
