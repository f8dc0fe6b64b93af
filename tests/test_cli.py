"""The `gpustack` command itself: version, start-up errors, and resetting the admin password."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.server.conftest import login, server_settings, start_server


def gpustack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpustack", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_version_prints_the_version() -> None:
    result = gpustack("version")
    assert result.returncode == 0 and result.stdout.startswith("gpustack 0.")


def test_start_with_a_bad_flag_stops_with_one_line(tmp_path: Path) -> None:
    result = gpustack("start", "--data-dir", str(tmp_path), "--service-port-range", "9-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpustack start: --service-port-range: accepts a range N1-N2 of ports between 1 and 65535 with "
        "N1 <= N2, such as 40000-40063; got '9-1'"
    ]


def test_a_worker_needs_the_token(tmp_path: Path) -> None:
    result = gpustack("start", "--data-dir", str(tmp_path), "--server-url", "http://127.0.0.1:1")
    assert result.returncode == 2 and "--token: required with --server-url" in result.stderr


def test_a_busy_port_is_reported_by_flag(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        flags = ["--host", "127.0.0.1", "--port", str(port), "--disable-worker"]
        result = gpustack("start", "--data-dir", str(tmp_path), *flags)
    assert result.returncode == 1
    assert f"--port {port}: the port is already in use" in result.stderr


async def test_reset_admin_password_through_the_database(
    tmp_path: Path, database_url: str, clean_env: None
) -> None:
    server, stop, task, url = await start_server(server_settings(tmp_path, database_url))
    try:
        args = ["reset-admin-password", "--data-dir", str(tmp_path / "data"), "--database-url", database_url]
        # --server-url is accepted as in the FAQ's troubleshooting.
        result = await asyncio.to_thread(gpustack, *args, "--server-url", f"http://127.0.0.1:{free_port()}")
        assert result.returncode == 0, result.stderr
        password = re.search(r"is now: (\S+)", result.stdout)
        assert password
        async with httpx.AsyncClient(base_url=url) as client:
            await login(client, "admin", password.group(1))
            assert (await client.get("/v2/users/me")).json()["require_password_change"] is True
    finally:
        stop.set()
        await task


def test_reset_admin_password_without_a_database_says_what_to_pass_and_creates_nothing(
    tmp_path: Path,
) -> None:
    for data_dir in (tmp_path, tmp_path / "missing"):
        result = gpustack("reset-admin-password", "--data-dir", str(data_dir))
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"gpustack reset-admin-password: no GPUStack database at {data_dir / 'database.db'}; "
            "pass the --data-dir of the server (or its --database-url)"
        ]
    assert list(tmp_path.iterdir()) == []  # no empty database.db left behind, no data dir made


def test_reset_admin_password_on_a_database_it_cannot_use_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "database.db").write_text("not a database")
    result = gpustack("reset-admin-password", "--data-dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"gpustack reset-admin-password: cannot use the database at sqlite:///{tmp_path / 'database.db'}: "
        "file is not a database"
    ]
    url = f"postgresql://gpustack:secret@127.0.0.1:{free_port()}/gpustack"
    result = gpustack("reset-admin-password", "--database-url", url)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "cannot use the database at postgresql://gpustack:***@127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr
