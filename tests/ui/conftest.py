"""Fixtures of the UI tests: the in-process server of tests/server, and a server serving a stand-in build."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gpustack.server import ui
from tests.server.conftest import RunningServer, admin, server, server_settings, start_server  # noqa: F401

INDEX_HTML = (
    '<!doctype html><html><head><script type="module" src="/assets/index-0a1b2c3d.js"></script>'
    "</head><body><div id=root></div></body></html>"
)
SCRIPT = "console.log('the app');\n" * 200


def write_build(folder: Path) -> Path:
    """What `npm run build` leaves: index.html, hashed assets (with gzipped copies), a favicon."""
    (folder / "assets").mkdir(parents=True)
    (folder / "index.html").write_text(INDEX_HTML)
    (folder / "assets" / "index-0a1b2c3d.js").write_text(SCRIPT)
    (folder / "assets" / "index-0a1b2c3d.js.gz").write_bytes(gzip.compress(SCRIPT.encode()))
    (folder / "favicon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    return folder


async def _serve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> AsyncIterator[RunningServer]:
    monkeypatch.setattr(ui, "STATIC_DIR", folder)
    instance, stop, task, url = await start_server(
        server_settings(tmp_path, f"sqlite:///{tmp_path / 'db.db'}")
    )
    assert instance.ctx is not None
    yield RunningServer(url, instance.config, instance.ctx)
    stop.set()
    await asyncio.wait_for(task, 60)


@pytest.fixture
async def built_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> AsyncIterator[RunningServer]:
    """A server whose UI build is a small stand-in (the real build is tested in the browser tests)."""
    async for running in _serve(tmp_path, monkeypatch, write_build(tmp_path / "static")):
        yield running


@pytest.fixture
async def unbuilt_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> AsyncIterator[RunningServer]:
    async for running in _serve(tmp_path, monkeypatch, tmp_path / "no-build"):
        yield running


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:  # type: ignore[type-arg]
    """Lets the browser tests see whether a test failed, to keep a screenshot of the page."""
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
