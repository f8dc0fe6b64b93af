"""What the browser tests stand on: Debian's chromium driven by Playwright (never a browser Playwright
downloads), a real `gpustack start` with its embedded worker, and screenshots kept as artifacts."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from gpustack.server.ui import STATIC_DIR
from tests.conftest import free_port, free_port_range
from tests.e2e.cluster import GpustackProcess, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
# Kept after the run for a person to look at (build/ is ignored by git); GPUSTACK_UI_SCREENSHOTS moves it.
SCREENSHOTS = Path(os.environ.get("GPUSTACK_UI_SCREENSHOTS", ROOT / "build" / "ui-screenshots"))

# As the machine's notes say: without the background-networking flags chromium keeps trying to reach
# Google, which a closed network refuses; the profile is a fresh folder per run.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    return (
        os.environ.get("GPUSTACK_TEST_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


def ui_built() -> bool:
    return (STATIC_DIR / "index.html").is_file()


@contextmanager
def chromium(profile: Path) -> Iterator[BrowserContext]:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    assert executable is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@dataclass
class UIServer:
    """A `gpustack start` with its embedded worker, whose first admin password is generated."""

    url: str
    process: GpustackProcess
    password: str = ""  # the admin's, once the test has chosen it
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.url, timeout=30)

    @property
    def initial_password(self) -> str:
        return (self.process.data_dir / "initial_admin_password").read_text().strip()

    def login(self) -> None:
        response = self.http.post("/auth/login", json={"username": "admin", "password": self.password})
        assert response.status_code == 200, response.text


@contextmanager
def ui_server(root: Path, extra_args: list[str] | None = None) -> Iterator[UIServer]:
    """The server of the browser tests; `extra_args` go to `gpustack start` (a --model-catalog-file)."""
    port = free_port()
    low, high = free_port_range(8)
    process = GpustackProcess(
        "server",
        root / "server",
        [
            "--host", "127.0.0.1", "--port", str(port), "--worker-name", "main", "--worker-ip", "127.0.0.1",
            "--worker-port", str(free_port()), "--service-port-range", f"{low}-{high}",
            *(extra_args or []),
        ],
    )  # fmt: skip
    server = UIServer(f"http://127.0.0.1:{port}", process)
    process.start()
    try:

        def healthy() -> bool:
            if process.process is not None and process.process.poll() is not None:
                raise AssertionError(f"server exited:\n{process.log_tail()}")
            return httpx.get(server.url + "/healthz", timeout=2).status_code == 200

        wait_until(healthy, 60, "the server's /healthz")
        yield server
    except BaseException:
        print(process.log_tail(120))
        raise
    finally:
        server.http.close()
        process.stop()


def shoot(page: Page, name: str) -> Path:
    """A full-page screenshot of what the test sees, kept as an artifact."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.wait_for_timeout(300)  # let transitions and the live lists settle for the picture
    page.screenshot(path=str(path), full_page=True)
    return path
