"""Secrets on the local machine: the data dir, database, journal and logs are private to the user who runs
gpustack, and the cluster token need not appear on a command line that every local user can read."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import psutil
import pytest

from gpustack.config import ConfigError, load_config
from gpustack.worker.process import start_logged, terminate
from tests.conftest import free_port
from tests.e2e.cluster import GpustackProcess, wait_until
from tests.security.real_server import admin_client, running_server

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_dir_database_journal_and_secrets_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with running_server(data) as (_process, url):
        with admin_client(url) as admin:  # a login writes a session: the WAL is in use
            assert admin.get("/v2/users/me").status_code == 200
        assert mode(data) == 0o700
        assert mode(data / "log") == 0o700
        private = {
            path.name: mode(path)
            for path in [
                data / "database.db",
                data / "database.db-wal",
                data / "database.db-shm",
                data / "token",
                data / "session_secret",
                data / "gpustack.lock",
            ]
        }
        assert private == dict.fromkeys(private, 0o600)


def test_an_existing_open_data_dir_is_made_private_at_start_and_says_so(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # What an older version left: a 0755 data dir with a 0644 database and a 0644 engine log.
    (data / "log" / "serve").mkdir(parents=True)
    for directory in (data, data / "log", data / "log" / "serve"):
        directory.chmod(0o755)
    database = data / "database.db"
    database.touch()
    database.chmod(0o644)
    with running_server(data) as (process, _url):
        assert mode(data) == 0o700
        assert mode(data / "log") == 0o700
        assert mode(database) == 0o600
        assert mode(data / "database.db-wal") == 0o600
        output = process.log_tail(200)
    assert f"the data dir {data} was readable by other users (0o755); changed it to 0o700" in output
    assert f"the database {database} was readable by other users (0o644); changed it to 0o600" in output


async def test_engine_logs_are_private_even_when_an_older_log_was_not(tmp_path: Path) -> None:
    log_dir = tmp_path / "log"
    old = log_dir / "rpc_server" / "gpu-0.log"
    old.parent.mkdir(parents=True)
    old.write_text("from an older version\n")
    old.chmod(0o644)
    new = log_dir / "serve" / "7.log"
    for log in (old, new):
        process = await start_logged([sys.executable, "-c", "print('engine output')"], dict(os.environ), log)
        await process.wait()
        await terminate(process, 5)
        assert "engine output" in log.read_text()
        assert mode(log) == 0o600
    assert mode(new.parent) == 0o700


def test_the_token_comes_from_a_file_or_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    for cli, environ in (
        ({"token_file": str(token_file)}, {}),
        ({}, {"GPUSTACK_TOKEN_FILE": str(token_file)}),
        ({}, {"GPUSTACK_TOKEN": "s3cret-token"}),
    ):
        assert load_config({"data_dir": str(tmp_path), **cli}, environ).token == "s3cret-token"
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"token_file: {token_file}\n")
    assert load_config({"config_file": str(config_file)}, {}).token == "s3cret-token"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--token-file: cannot read {path}: No such file or directory"),
        ("", "--token-file: {path} must hold the token on one line"),
        ("one\ntwo\n", "--token-file: {path} must hold the token on one line"),
    ],
)
def test_a_bad_token_file_is_refused_in_words(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as raised:
        load_config({"token_file": str(path)}, {})
    assert str(raised.value) == message.format(path=path)


def test_a_token_and_a_token_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("a\n")
    with pytest.raises(ConfigError, match="give one of them"):
        load_config({"token_file": str(tmp_path / "token")}, {"GPUSTACK_TOKEN": "b"})


def test_a_worker_joins_with_a_token_file_and_no_token_on_its_command_line(tmp_path: Path) -> None:
    with running_server(tmp_path / "server") as (_server, url):
        token_file = tmp_path / "worker-token"
        token_file.write_text((tmp_path / "server" / "token").read_text())
        token_file.chmod(0o600)
        token = token_file.read_text().strip()
        worker = GpustackProcess(
            "worker",
            tmp_path / "worker",
            [
                "--server-url", url, "--token-file", str(token_file), "--worker-name", "filed",
                "--worker-ip", "127.0.0.1", "--worker-port", str(free_port()), "--disable-rpc-servers",
            ],
        )  # fmt: skip
        worker.start()
        try:
            with admin_client(url) as admin:

                def registered() -> bool:
                    assert worker.process is not None and worker.process.poll() is None, worker.log_tail()
                    return bool(admin.get("/v2/workers", params={"name": "filed"}).json()["items"])

                wait_until(registered, 90, "the worker to register with its token file")
            command = " ".join(psutil.Process(worker.pid).cmdline())
            assert token not in command
        except BaseException:
            print(worker.log_tail())
            raise
        finally:
            worker.stop()
