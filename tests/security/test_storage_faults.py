"""Storage faults: a read-only data dir stops the start with one line, a full disk answers 507 in words, and
/readyz says whether the database can be written.

The read-only and full disks are real where this machine allows it: a read-only bind mount (or `chattr +i`)
as root, since root ignores file modes, or plain modes for another user; a small tmpfs filled to the last
byte. Where it does not, the full database is SQLite's own "database or disk is full" (max_page_count) and
PostgreSQL's SQLSTATE 53100 (disk_full) raised by a trigger, through the real drivers."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from gpustack.server.storage_full import is_out_of_space
from tests.conftest import free_port
from tests.e2e.cluster import wait_until
from tests.security.real_server import admin_client, running_server
from tests.server.conftest import RunningServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="mounts and file modes of Linux")


def _run(*command: str) -> bool:
    if shutil.which(command[0]) is None:
        return False
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[str]:
    """Make `path` (a directory or a file) really unwritable, even for root; yields how."""
    if os.geteuid() != 0:
        before = path.stat().st_mode
        path.chmod(0o500 if path.is_dir() else 0o400)
        try:
            yield "file modes"
        finally:
            path.chmod(before)
        return
    if _run("mount", "--bind", str(path), str(path)):
        if _run("mount", "-o", "remount,ro,bind", str(path)):
            try:
                yield "a read-only bind mount"
            finally:
                _run("umount", str(path))
            return
        _run("umount", str(path))
    if _run("chattr", "+i", str(path)):
        try:
            yield "chattr +i"
        finally:
            _run("chattr", "-i", str(path))
        return
    pytest.skip("cannot make a path read-only for root here (no mount --bind, no chattr +i)")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of its own, to fill."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0 or not _run(
        "mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)
    ):
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        _run("umount", str(mount_point))


def fill(disk: Path) -> Path:
    """Write a file until the disk has not one byte left."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


def start_and_wait(data: Path, *extra: str) -> subprocess.CompletedProcess[str] | None:
    """Run `gpustack start`; its result if it exits within a minute, None (after stopping it) if it runs."""
    command = [sys.executable, "-m", "gpustack", "start", "--data-dir", str(data), "--disable-worker"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(free_port()), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_a_read_only_data_dir_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data):
        pass  # a data dir with a database in it, as after any earlier start
    with read_only(data) as how:
        result = start_and_wait(data)
    assert result is not None, f"gpustack started on a data dir made read-only with {how}"
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gpustack start: --data-dir {data}: cannot write in it (")
    assert lines[0].endswith("or choose another directory")


def test_a_read_only_database_file_refuses_to_start_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data):
        pass
    database = data / "database.db"
    with read_only(database) as how:
        result = start_and_wait(data)
    assert result is not None, f"gpustack started with its database made read-only with {how}"
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"gpustack start: --database-url {database}: cannot write it (")


def test_a_full_disk_answers_507_says_what_to_do_and_readyz_follows(small_disk: Path) -> None:
    with running_server(small_disk) as (process, url), admin_client(url) as admin:
        assert admin.get("/readyz").status_code == 200
        filler = fill(small_disk)
        statuses = []
        for attempt in range(50):
            response = admin.post("/v2/api-keys", json={"name": f"full-{attempt}"})
            statuses.append(response.status_code)
            if response.status_code == 507:
                break
        assert statuses[-1] == 507, statuses
        assert all(status in (201, 507) for status in statuses), statuses
        body = response.json()
        assert body["code"] == 507 and body["reason"] == "InsufficientStorage"
        assert "disk is full" in body["message"]
        assert f"free space on the disk that holds {small_disk / 'database.db'}" in body["message"].lower()

        def readyz_says_full() -> bool:
            response = admin.get("/readyz")
            return response.status_code == 503 and "disk is full" in response.json()["message"]

        wait_until(readyz_says_full, 30, "/readyz to report the full disk")
        filler.unlink()
        wait_until(lambda: admin.get("/readyz").status_code == 200, 30, "/readyz after space was freed")
        assert admin.post("/v2/api-keys", json={"name": "after"}).status_code == 201
        assert process.process is not None and process.process.poll() is None


def _on_new_connections(server: RunningServer, statements: Callable[[Any], None]) -> None:
    """Run `statements` on every new database connection of the running server (dispose its pool after)."""
    event.listen(server.ctx.engine.sync_engine, "connect", lambda connection, _record: statements(connection))


def _limit_sqlite_to_its_size(connection: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA page_count")
    pages = cursor.fetchone()[0]
    cursor.execute(f"PRAGMA max_page_count = {pages}")
    cursor.close()


async def test_a_full_database_answers_507_in_the_error_shape(
    server: RunningServer, admin: httpx.AsyncClient
) -> None:
    if server.config.database_url.startswith("sqlite"):
        _on_new_connections(server, _limit_sqlite_to_its_size)
    else:
        name = f"gpustack_test_disk_full_{uuid.uuid4().hex[:8]}"
        async with server.ctx.engine.begin() as connection:
            await connection.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    "RAISE EXCEPTION 'could not extend file: No space left on device' "
                    "USING ERRCODE = 'disk_full'; "
                    "END $$"
                )
            )
            await connection.execute(
                text(
                    f"CREATE TRIGGER {name} BEFORE INSERT ON api_keys FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
    await server.ctx.engine.dispose()
    statuses = []
    for attempt in range(300):  # SQLite fills the free room in its last pages before it needs another
        response = await admin.post("/v2/api-keys", json={"name": f"k{attempt}", "description": "x" * 200})
        statuses.append(response.status_code)
        if response.status_code != 201:
            break
    assert statuses[-1] == 507, statuses
    body = response.json()
    assert set(body) == {"code", "reason", "message"}
    assert body["code"] == 507 and body["reason"] == "InsufficientStorage"
    assert "disk is full" in body["message"] and "nothing was saved" in body["message"]
    assert "then try again" in body["message"]


def _read_only_connections(connection: Any) -> None:
    cursor = connection.cursor()
    if "sqlite" in type(connection).__module__ or "sqlite" in type(connection).__name__.lower():
        cursor.execute("PRAGMA query_only = ON")
    else:
        cursor.execute("SET default_transaction_read_only = on")
    cursor.close()


async def test_readyz_is_503_while_the_database_cannot_be_written(server: RunningServer) -> None:
    async with server.client() as client:
        assert (await client.get("/readyz")).status_code == 200
        _on_new_connections(server, _read_only_connections)
        await server.ctx.engine.dispose()

        async def not_ready() -> httpx.Response | None:
            response = await client.get("/readyz")
            return response if response.status_code == 503 else None

        for _ in range(50):  # the answer is kept for a second
            response = await not_ready()
            if response is not None:
                break
            await asyncio.sleep(0.1)
        assert response is not None
        assert response.json()["message"].startswith("the database cannot be written: ")
        assert "read" in response.json()["message"]  # the driver's own words: readonly / read-only


def test_out_of_space_is_recognised_from_the_os_and_each_database() -> None:
    import sqlite3

    import asyncpg

    assert is_out_of_space(OSError(errno.ENOSPC, "No space left on device"))
    assert is_out_of_space(sqlite3.OperationalError("database or disk is full"))
    disk_full = asyncpg.exceptions.DiskFullError("could not extend file")
    assert disk_full.sqlstate == "53100" and is_out_of_space(disk_full)
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert is_out_of_space(wrapped)
    assert not is_out_of_space(sqlite3.OperationalError("database is locked"))
    assert not is_out_of_space(OSError(errno.EACCES, "Permission denied"))
