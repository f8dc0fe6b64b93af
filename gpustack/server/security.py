"""Secrets: password hashes, API keys, session tokens and the cluster token."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_KEY_PREFIX = "gpustack"
SESSION_COOKIE = "gpustack_session"
SESSION_TTL_SECONDS = 7 * 86400

_hasher = PasswordHasher()
# Argon2 takes ~0.1 s of CPU by design: it runs in threads, a few at a time, so that a burst of logins
# (or guesses) cannot stall heartbeats, watch streams and the gateway on the event loop.
_hashing = asyncio.Semaphore(2)


def _verify(hashed: str, password: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    async with _hashing:
        return await asyncio.to_thread(_hasher.hash, password)


_dummy: list[str] = []


async def dummy_hash() -> str:
    """A real hash of a random password, for checks against users that do not exist."""
    if not _dummy:
        _dummy.append(await hash_password(secrets.token_hex(16)))
    return _dummy[0]


async def verify_password(hashed: str, password: str) -> bool:
    async with _hashing:
        return await asyncio.to_thread(_verify, hashed, password)


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


def password_stamp(hashed_password: str) -> str:
    """Changes whenever the password does, so sessions issued before a change stop working."""
    return hashlib.sha256(hashed_password.encode()).hexdigest()[:16]


def issue_session(secret: str, user_id: int, hashed_password: str) -> str:
    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "pw": password_stamp(hashed_password),
        "iat": now,
        "exp": now + SESSION_TTL_SECONDS,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def read_session(secret: str, token: str) -> tuple[int, str] | None:
    """(user id, password stamp) from a valid session token, else None."""
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"])
        return int(claims["sub"]), str(claims["pw"])
    except (jwt.PyJWTError, KeyError, ValueError):
        return None
