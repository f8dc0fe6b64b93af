"""One gpustack process per data dir: a second start on the same --data-dir is refused, naming the first,
before it can take over the first one's worker; a lock left by a killed process does not block."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpustack.utils.data_dir_lock import DataDirBusy, DataDirLock, redacted
from tests.conftest import free_port
from tests.e2e.cluster import GpustackProcess, wait_until
from tests.security.real_server import admin_client, running_server, server_process, wait_healthy


def test_a_second_start_on_the_same_data_dir_is_refused_naming_the_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    worker = ["--worker-name", "first", "--worker-ip", "127.0.0.1", "--worker-port", str(free_port())]
    first, url = server_process(data, *worker)
    first.args.remove("--disable-worker")
    first.start()
    try:
        wait_healthy(first, url)
        with admin_client(url) as admin:
            wait_until(lambda: admin.get("/v2/workers").json()["items"], 60, "the embedded worker")
            # The same data dir, other ports and another worker name: what used to rename the first's worker.
            second = subprocess.run(
                [
                    sys.executable, "-m", "gpustack", "start", "--data-dir", str(data), "--host", "127.0.0.1",
                    "--port", str(free_port()), "--worker-name", "second", "--worker-port", str(free_port()),
                ],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert second.returncode == 1, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert lines[0].startswith(
                f"gpustack start: the data dir {data} is in use by another gpustack process"
            )
            assert f"pid {first.pid} (" in lines[0] and "gpustack start --data-dir" in lines[0]
            assert "--bootstrap-password ***" in lines[0]  # its secrets are not repeated
            assert "stop that process first, or give this one another --data-dir" in lines[0]
            workers = admin.get("/v2/workers").json()["items"]
            assert [w["name"] for w in workers] == ["first"]
            assert first.process is not None and first.process.poll() is None
    except BaseException:
        print(first.log_tail())
        raise
    finally:
        first.stop()


def test_a_lock_left_by_a_killed_server_does_not_block_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    killed, url = server_process(data)
    killed.start()
    try:
        wait_healthy(killed, url)
    finally:
        killed.kill()
    assert (data / "gpustack.lock").read_text().strip() == str(killed.pid)  # the file stays behind
    with running_server(data) as (process, _url):
        assert (data / "gpustack.lock").read_text().strip() == str(process.pid)


def test_the_lock_is_released_when_the_server_stops(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data):
        with pytest.raises(DataDirBusy):
            DataDirLock(data).acquire()
    lock = DataDirLock(data)
    lock.acquire()
    lock.release()


def test_a_worker_only_start_holds_the_data_dir_too(tmp_path: Path) -> None:
    data = tmp_path / "worker"
    # No server needs to answer: the lock is taken before the worker tries to reach one.
    worker = GpustackProcess(
        "worker",
        data,
        ["--server-url", "http://127.0.0.1:9", "--worker-port", str(free_port())],
        {"GPUSTACK_TOKEN": "t"},
    )
    worker.start()
    try:
        wait_until(
            lambda: (data / "gpustack.lock").exists() and DataDirLock(data).path.read_text().strip(),
            60,
            "the lock",
        )
        with pytest.raises(DataDirBusy, match=f"pid {worker.pid}"):
            DataDirLock(data).acquire()
    finally:
        worker.stop()


def test_one_process_cannot_take_the_same_data_dir_twice(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirBusy) as raised:
            DataDirLock(tmp_path).acquire()
    assert f"pid {os.getpid()}" in str(raised.value)
    with DataDirLock(tmp_path):  # released on leaving the block
        pass


def test_command_lines_are_shown_without_their_secrets() -> None:
    shown = redacted(
        ["gpustack", "start", "--token", "abc", "-t", "def", "--bootstrap-password=pw",
         "--database-url", "postgresql://u:pw@db/x", "--port", "80"]
    )  # fmt: skip
    assert shown == (
        "gpustack start --token *** -t *** --bootstrap-password=*** --database-url *** --port 80"
    )
    assert redacted(["x", "postgresql://u:pw@db/x"]) == "x postgresql://***@db/x"
