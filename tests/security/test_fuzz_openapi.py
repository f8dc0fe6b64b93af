"""Schemathesis over the server's own OpenAPI spec, as an administrator: no input gives a 5xx.

Bounded by GPUSTACK_FUZZ_SECONDS (default 150 s) so that CI stays within minutes; a longer local run
is `GPUSTACK_FUZZ_SECONDS=1800 pytest tests/security/test_fuzz_openapi.py`."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_or_skip
from tests.server.conftest import RunningServer

_REPO_ROOT = str(Path(__file__).resolve().parents[2])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_request_the_spec_allows_or_forbids_gives_a_server_error(
    server: RunningServer, admin: httpx.AsyncClient, tmp_path: Path
) -> None:
    st = shutil.which("schemathesis", path=os.path.dirname(sys.executable)) or shutil.which("schemathesis")
    require_or_skip(st is not None, "schemathesis (pip install -e '.[test]')")
    assert st is not None
    created = (await admin.post("/v2/api-keys", json={"name": "fuzz"})).json()
    me = (await admin.get("/v2/users/me")).json()
    seconds = os.environ.get("GPUSTACK_FUZZ_SECONDS", "150")
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.security.fuzz_hooks",
        "PYTHONPATH": _REPO_ROOT,
        "GPUSTACK_FUZZ_USER_ID": str(me["id"]),
        "GPUSTACK_FUZZ_KEY_ID": str(created["id"]),
    }
    process = await asyncio.create_subprocess_exec(
        st, "run", f"{server.url}/openapi.json",
        "--checks", "not_a_server_error",
        "--header", f"Authorization: Bearer {created['value']}",
        "--max-time", seconds,
        "--workers", "2",
        "--request-timeout", "20",
        "--seed", "1",
        "--no-color",
        "--generation-database", "none",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), int(seconds) + 300)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20000:]
