"""The FAQ's proxy variables: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY (socks5 too) and NO_PROXY with hosts,
domains and CIDR networks, decided as curl does and honoured by downloads and huggingface_hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.sources.base import RemoteFile, SourceSettings
from gpustack.sources.huggingface import list_repo
from gpustack.sources.proxies import describe_proxy, proxy_for
from gpustack.worker.files.download import Progress, client, download_file
from tests.fixtures.hubs import HubState, hub_server
from tests.fixtures.proxies import ProxyLog, http_proxy, socks5_proxy

FAQ = {
    "HTTP_PROXY": "http://user:pass@proxy-server:3128",
    "HTTPS_PROXY": "http://user:pass@proxy-server:3129",
    "ALL_PROXY": "socks5://user:pass@proxy-server:1080",
    "NO_PROXY": "localhost,127.0.0.1,192.168.0.0/24,172.16.0.0/16,10.0.0.0/8",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://huggingface.co/api/models/x/y", "http://user:pass@proxy-server:3129"),
        ("http://hf-mirror.example/x", "http://user:pass@proxy-server:3128"),
        ("http://192.168.0.20:10150/healthz", None),
        ("http://192.168.1.20:10150/healthz", "http://user:pass@proxy-server:3128"),
        ("https://10.200.3.4/x", None),
        ("http://172.16.9.9/x", None),
        ("http://172.17.0.1/x", "http://user:pass@proxy-server:3128"),
        ("http://localhost:8080/x", None),
        ("http://127.0.0.1/x", None),
    ],
)
def test_no_proxy_takes_the_faqs_networks(url: str, expected: str | None) -> None:
    assert proxy_for(url, FAQ) == expected


def test_all_proxy_serves_schemes_without_their_own_and_domains_match_their_subdomains() -> None:
    env = {"ALL_PROXY": "socks5://p:1080", "no_proxy": ".internal.example, mirror.example:8443"}
    assert proxy_for("https://huggingface.co/x", env) == "socks5://p:1080"
    assert proxy_for("https://a.internal.example/x", env) is None
    assert proxy_for("https://mirror.example:8443/x", env) is None
    assert proxy_for("https://mirror.example/x", env) == "socks5://p:1080"  # another port
    assert proxy_for("https://x", {"https_proxy": "lower:1", "HTTPS_PROXY": "upper:2"}) == "http://lower:1"
    assert proxy_for("https://x", {"ALL_PROXY": "socks5://p:1080", "NO_PROXY": "*"}) is None
    assert describe_proxy("http://user:secret@proxy:3128") == "http://proxy:3128"


@pytest.fixture
def hub(tmp_path: Path):
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "model.gguf").write_bytes(b"GGUF" + bytes(range(256)) * 4096)
    state = HubState(repos={"org/repo": str(folder)})
    with hub_server(state) as endpoint:
        # Reached by name, so that NO_PROXY's 127.0.0.0/8 does not bypass the proxy.
        yield state, endpoint.replace("127.0.0.1", "localhost"), folder


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_downloads_and_huggingface_hub_go_through_the_proxy(tmp_path: Path, hub, kind: str) -> None:
    state, endpoint, folder = hub
    log = ProxyLog()
    serve = http_proxy if kind == "http" else socks5_proxy
    with serve(log) as proxy:
        env = {"HTTP_PROXY": proxy} if kind == "http" else {"ALL_PROXY": proxy}
        settings = SourceSettings.of(None, {"HF_ENDPOINT": endpoint, **env})
        _, files = list_repo("org/repo", settings)
        target = tmp_path / "model.gguf"
        with client(settings.environ) as http:
            download_file(files["model.gguf"], target, http, Progress(), settings.environ)
    assert target.read_bytes() == (folder / "model.gguf").read_bytes()
    assert len(log.targets) >= 2 and all(t.startswith("localhost:") for t in log.targets)


def test_no_proxy_with_a_cidr_sends_the_download_directly(tmp_path: Path, hub) -> None:
    state, endpoint, folder = hub
    log = ProxyLog()
    with http_proxy(log) as proxy:
        direct = endpoint.replace("localhost", "127.0.0.1")
        env = {"HTTP_PROXY": proxy, "NO_PROXY": "192.168.0.0/24,127.0.0.0/8"}
        file = RemoteFile(
            "model.gguf", f"{direct}/cdn/org/repo/model.gguf", (folder / "model.gguf").stat().st_size
        )
        with client(env) as http:
            download_file(file, tmp_path / "model.gguf", http, Progress(), env)
    assert log.targets == [] and (tmp_path / "model.gguf").stat().st_size == file.size
