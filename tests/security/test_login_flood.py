"""Password guessing is throttled per user name and per client address, before any hashing, with 429
and Retry-After; a flood does not turn into hundreds of Argon2 computations."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gpustack.server import security
from gpustack.server.login_throttle import LoginThrottle, ThrottlePolicy
from tests.server.conftest import ADMIN_PASSWORD, RunningServer


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/auth/login", json={"username": username, "password": password})


async def test_repeated_wrong_passwords_get_429_with_retry_after_then_the_right_one_works(
    server: RunningServer,
) -> None:
    async with server.client() as guesser:
        statuses = [(await _login(guesser, "admin", f"guess-{i}")).status_code for i in range(6)]
        assert statuses == [401] * 6
        throttled = await _login(guesser, "admin", ADMIN_PASSWORD)  # even the right one waits
        assert throttled.status_code == 429
        assert (
            throttled.json()["reason"] == "TooManyRequests" and "try again in" in throttled.json()["message"]
        )
        wait = int(throttled.headers["Retry-After"])
        assert 1 <= wait <= 300
        await asyncio.sleep(wait + 0.1)
        assert (await _login(guesser, "admin", ADMIN_PASSWORD)).status_code == 200


async def test_one_address_guessing_many_user_names_is_throttled(server: RunningServer) -> None:
    async with server.client() as sprayer:
        statuses = [(await _login(sprayer, f"user{i}", "wrong-password")).status_code for i in range(22)]
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429


async def test_a_flood_of_parallel_guesses_hashes_only_a_few_passwords(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    hashed = 0
    verify = security._verify

    def counting(hashed_password: str, password: str) -> bool:
        nonlocal hashed
        hashed += 1
        return verify(hashed_password, password)

    monkeypatch.setattr(security, "_verify", counting)
    async with server.client() as flood, server.client() as health:
        guesses = [_login(flood, "admin", f"guess-{i}") for i in range(200)]
        results = await asyncio.gather(*guesses, health.get("/healthz"))
    statuses = [r.status_code for r in results[:-1]]
    assert results[-1].status_code == 200
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 150
    # Without the throttle every guess costs one Argon2 check (200); with it, a few per key.
    assert hashed <= 40


def test_failures_are_forgotten_after_a_quiet_while_and_success_resets_the_user_name() -> None:
    throttle = LoginThrottle(
        ThrottlePolicy(free_failures=2, first_delay=60, max_delay=60, forget_after=3600),
        ThrottlePolicy(free_failures=100, first_delay=60, max_delay=60, forget_after=3600),
    )
    for _ in range(3):
        throttle.failed("Admin", "10.0.0.1")
    assert throttle.retry_after("admin", "10.0.0.2") == 60  # the user name, whatever the address
    throttle.succeeded("ADMIN")
    assert throttle.retry_after("admin", "10.0.0.1") == 0
