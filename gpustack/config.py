"""One Config for a gpustack process: command line > config file > GPUSTACK_* environment > defaults."""

from __future__ import annotations

import ipaddress
import json
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from gpustack.schemas.users import MIN_PASSWORD_LENGTH, check_password
from gpustack.schemas.workers import GPUDevice, GPUType, SystemReserved

GiB = 1024**3


class ConfigError(ValueError):
    """A value a user gave is not acceptable; the message names the flag and what it accepts."""


def default_data_dir() -> str:
    if platform.system() == "Windows":
        return str(Path(os.environ.get("APPDATA", str(Path.home() / "AppData" / "Roaming"))) / "gpustack")
    return "/var/lib/gpustack"


# ---- value parsers: each takes what the user wrote (string, or a YAML value) and returns a typed value


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("accepts true or false")


def _parse_port(value: Any) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise ValueError("accepts a port number between 1 and 65535") from None
    if isinstance(value, bool) or not 1 <= port <= 65535:
        raise ValueError("accepts a port number between 1 and 65535")
    return port


def _parse_positive_float(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("accepts a positive number of seconds") from None
    if not 0 < number <= 600:
        raise ValueError("accepts a positive number of seconds, at most 600")
    return number


def _parse_grace(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("accepts a number of seconds between 0 and 86400") from None
    if isinstance(value, bool) or not 0 <= number <= 86400:
        raise ValueError("accepts a number of seconds between 0 and 86400")
    return number


def _parse_str(value: Any) -> str:
    if isinstance(value, (dict, list)):
        raise ValueError("accepts a single value")
    text = str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _parse_path(value: Any) -> str:
    return str(Path(_parse_str(value)).expanduser())


def _parse_ip(value: Any) -> str:
    text = _parse_str(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("accepts an IPv4 or IPv6 address such as 10.10.10.1") from None
    return text


def _parse_url(value: Any) -> str:
    text = _parse_str(value).strip().rstrip("/")
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("accepts an http:// or https:// URL such as http://10.10.10.1:80")
    return text


def _parse_server_urls(value: Any) -> list[str]:
    """One URL, several separated by commas, or a list of either (a repeated flag, a YAML list)."""
    items = value if isinstance(value, list) else [value]
    urls: list[str] = []
    for item in items:
        for part in _parse_str(item).split(","):
            if part.strip():
                url = _parse_url(part)
                if url not in urls:
                    urls.append(url)
    if not urls:
        raise ValueError("accepts an http:// or https:// URL such as http://10.10.10.1:80")
    return urls


def _parse_password(value: Any) -> str:
    return check_password(_parse_str(value))


def _parse_networks(value: Any) -> list[str]:
    items = value if isinstance(value, list) else _parse_str(value).split(",")
    networks = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            networks.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(
                "accepts IP addresses or CIDR networks separated by commas, such as 10.0.0.0/8; "
                f"{text!r} is not one"
            ) from None
    return networks


def _parse_database_url(value: Any) -> str:
    text = _parse_str(value).strip()
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    base = scheme.split("+", 1)[0]
    if base not in ("sqlite", "postgresql", "postgres", "mysql"):
        raise ValueError(
            "accepts sqlite:///<path>, postgresql://user:password@host:port/db "
            "or mysql://user:password@host:port/db"
        )
    return text


def _parse_port_range(value: Any) -> tuple[int, int]:
    text = _parse_str(value).strip()
    parts = text.split("-")
    message = "accepts a range N1-N2 of ports between 1 and 65535 with N1 <= N2, such as 40000-40063"
    if len(parts) != 2:
        raise ValueError(message)
    try:
        start, end = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(message) from None
    if not (1 <= start <= end <= 65535):
        raise ValueError(message)
    return start, end


def _parse_system_reserved(value: Any) -> SystemReserved:
    message = 'accepts JSON in GiB such as {"ram": 2, "vram": 1}'
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(message) from None
    if not isinstance(value, dict):
        raise ValueError(message)
    aliases = {"ram": "ram", "memory": "ram", "vram": "vram", "gpu_memory": "vram"}
    result: dict[str, int] = {}
    for key, amount in value.items():
        if key not in aliases:
            raise ValueError(f"{message}; unknown key {key!r}")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"{message}; {key} must be a number >= 0")
        result[aliases[key]] = int(amount * GiB)
    return SystemReserved(**result)


def _parse_name(value: Any) -> str:
    text = _parse_str(value).strip()
    if len(text) > 200 or any(c in text for c in "\x00\n\r\t/"):
        raise ValueError("accepts a name of at most 200 characters without '/' or control characters")
    return text


def _parse_labels(value: Any) -> dict[str, str]:
    message = 'accepts key=value pairs separated by commas, or a JSON/YAML mapping such as {"rack": "a1"}'
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(message) from None
        else:
            pairs = [p for p in text.split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ValueError(message)
            value = dict(p.strip().split("=", 1) for p in pairs)
    if not isinstance(value, dict):
        raise ValueError(message)
    return {str(k): str(v) for k, v in value.items()}


def _parse_limit(value: Any) -> int:
    message = "accepts a whole number of requests between 0 (no limit) and 1000000"
    if isinstance(value, bool):
        raise ValueError(message)
    try:
        number = int(str(value).strip())
    except ValueError:
        raise ValueError(message) from None
    if not 0 <= number <= 1_000_000:
        raise ValueError(message)
    return number


def _parse_origins(value: Any) -> list[str]:
    items = value if isinstance(value, list) else _parse_str(value).split(",")
    origins = []
    for item in items:
        text = str(item).strip().rstrip("/")
        if not text:
            continue
        parsed = urlparse(text)
        if text != "*" and (parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path):
            raise ValueError(
                "accepts origins such as https://app.example.com or http://localhost:3000 separated by "
                f"commas, or * for any; {text!r} is not one"
            )
        origins.append(text)
    if not origins:
        raise ValueError("accepts at least one origin, or * for any")
    return origins


def _parse_size(value: Any, what: str) -> int:
    """Bytes from a number of bytes or a string such as '24GiB', '512 MiB', '80GB'."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a size such as 24GiB")
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().replace(" ", "")
    units = {"gib": GiB, "gb": 10**9, "mib": 1024**2, "mb": 10**6, "kib": 1024, "kb": 1000, "b": 1}
    for suffix, factor in units.items():
        if text.lower().endswith(suffix):
            number = text[: -len(suffix)]
            try:
                return int(float(number) * factor)
            except ValueError:
                break
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be a size such as 24GiB, got {value!r}") from None


def _parse_body_size(value: Any) -> int:
    message = "accepts a size between 1KiB and 1GiB, such as 32MiB"
    try:
        size = _parse_size(value, "the value")
    except ValueError:
        raise ValueError(message) from None
    if not 1024 <= size <= GiB:
        raise ValueError(message)
    return size


def _parse_resources(value: Any) -> list[GPUDevice]:
    """Virtual GPUs declared in the config file, for testing and for hardware no detector knows.

    resources:
      gpu_devices:
        - name: NVIDIA GeForce RTX 4090
          vendor: NVIDIA
          type: cuda
          memory: 24GiB
    """
    if value is None:
        return []
    if not isinstance(value, dict) or not isinstance(value.get("gpu_devices", []), list):
        raise ValueError("accepts a mapping with a gpu_devices list (name, vendor, type, memory)")
    unknown = set(value) - {"gpu_devices"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}; accepts gpu_devices")
    devices: list[GPUDevice] = []
    valid_types = ", ".join(t.value for t in GPUType)
    for position, item in enumerate(value.get("gpu_devices", [])):
        where = f"gpu_devices[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be a mapping with name, vendor, type and memory")
        try:
            gpu_type = GPUType(str(item.get("type", "cuda")).lower())
        except ValueError:
            raise ValueError(f"{where}.type must be one of {valid_types}") from None
        if "memory" not in item:
            raise ValueError(f"{where}.memory is required, such as 24GiB")
        memory = _parse_size(item["memory"], f"{where}.memory")
        if memory <= 0:
            raise ValueError(f"{where}.memory must be greater than 0")
        devices.append(
            GPUDevice.model_validate(
                {
                    "index": int(item.get("index", position)),
                    "name": str(item.get("name", f"Virtual GPU {position}")),
                    "vendor": str(item.get("vendor", "")),
                    "type": gpu_type,
                    "uuid": str(item.get("uuid", f"virtual-{position}")),
                    "memory": {"total": memory, "is_unified_memory": bool(item.get("unified_memory", False))},
                    "virtual": True,
                }
            )
        )
    indexes = [d.index for d in devices]
    if len(set(indexes)) != len(indexes):
        raise ValueError("gpu_devices have duplicate indexes")
    return devices


@dataclass(frozen=True)
class Flag:
    """One setting: its command-line spelling, how to read it and its default."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    default: Any = None
    short: str | None = None
    is_switch: bool = False
    cli: bool = True
    repeatable: bool = False  # may be given several times on the command line

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


FLAGS: tuple[Flag, ...] = (
    Flag(
        "config_file", _parse_path, "Path to a YAML config file whose keys are the flags' snake_case names."
    ),
    Flag("debug", _parse_bool, "Enable debug logging.", False, short="-d", is_switch=True),
    Flag("data_dir", _parse_path, "Directory for data (database, token, logs, cache).", None),
    Flag("cache_dir", _parse_path, "Directory for model files. Default <data-dir>/cache."),
    Flag("log_dir", _parse_path, "Directory for logs. Default <data-dir>/log."),
    Flag("bin_dir", _parse_path, "Directory for engine executables. Default <data-dir>/bin."),
    Flag(
        "token",
        _parse_str,
        "Shared secret that workers use to join. Generated once when not given. Other local users can see "
        "a command line: prefer the GPUSTACK_TOKEN environment variable or --token-file.",
        short="-t",
    ),
    Flag("token_file", _parse_path, "File that holds the token (on one line), instead of --token."),
    Flag("host", _parse_str, "Address the server listens on.", "0.0.0.0"),
    Flag("port", _parse_port, "Port the server listens on. Default 80, or 443 with --ssl-certfile."),
    Flag("ssl_keyfile", _parse_path, "TLS private key (PEM) of the server; with --ssl-certfile."),
    Flag("ssl_certfile", _parse_path, "TLS certificate chain (PEM) of the server; with --ssl-keyfile."),
    Flag(
        "trusted_proxies",
        _parse_networks,
        "Reverse proxies whose X-Forwarded-For/-Proto the server believes, as IPs or CIDRs separated by "
        "commas (e.g. 127.0.0.1,10.0.0.0/8). Default none.",
    ),
    Flag("database_url", _parse_database_url, "Database URL. Default sqlite:///<data-dir>/database.db."),
    Flag("disable_worker", _parse_bool, "Do not run the embedded worker.", False, is_switch=True),
    Flag(
        "bootstrap_password",
        _parse_password,
        f"Initial password of the admin user (at least {MIN_PASSWORD_LENGTH} characters). "
        "Random when not given.",
    ),
    Flag(
        "server_url",
        _parse_server_urls,
        "URL of a server to join as a worker. With several servers of one cluster, give each (separated by "
        "commas, or the flag repeated): the worker moves to the next when the one it uses cannot be reached.",
        short="-s",
        repeatable=True,
    ),
    Flag("worker_name", _parse_name, "Name of this worker. Default the hostname."),
    Flag("worker_ip", _parse_ip, "IP address of this worker. Default the first non-loopback address."),
    Flag("worker_port", _parse_port, "Port the worker listens on.", 10150),
    Flag("worker_labels", _parse_labels, "Labels of this worker, key=value,key=value.", None),
    Flag(
        "system_reserved",
        _parse_system_reserved,
        'Memory kept back from scheduling, JSON in GiB, such as {"ram": 2, "vram": 1}.',
        '{"ram": 2, "vram": 1}',
    ),
    Flag("service_port_range", _parse_port_range, "Ports for inference engines, N1-N2.", "40000-40063"),
    Flag("disable_rpc_servers", _parse_bool, "Do not start llama.cpp RPC servers.", False, is_switch=True),
    Flag(
        "rpc_server_port_range",
        _parse_port_range,
        "Ports for llama.cpp RPC servers (one per GPU), N1-N2.",
        "40064-40095",
    ),
    Flag(
        "ray_port_range",
        _parse_port_range,
        "Ports for the Ray nodes of vLLM across workers (26 per node: heads and worker nodes), N1-N2.",
        "40096-40999",
    ),
    Flag(
        "enable_ray", _parse_bool, "Let vLLM run across several workers through Ray.", False, is_switch=True
    ),
    Flag(
        "heartbeat_interval",
        _parse_positive_float,
        "Seconds between a worker's heartbeats; three missed make it not_ready.",
        5.0,
    ),
    Flag(
        "worker_lost_grace",
        _parse_grace,
        "Seconds a not_ready worker may also fail its health check before its instances are placed "
        "elsewhere (a worker that still answers keeps them).",
        90.0,
    ),
    Flag(
        "gateway_max_body_size",
        _parse_body_size,
        "Largest request body the OpenAI-compatible gateway accepts (e.g. 32MiB); larger ones get 413. "
        "Raise it for large images in chat requests.",
        "32MiB",
    ),
    Flag(
        "gateway_max_in_flight",
        _parse_limit,
        "Gateway requests this server holds at once (streams count until they end); past it, requests get "
        "503 with Retry-After at once. 0: no limit.",
        4096,
    ),
    Flag(
        "gateway_model_max_in_flight",
        _parse_limit,
        "Gateway requests this server holds at once for any one model; past it, requests for that model "
        "get 429 with Retry-After at once. 0: no limit.",
        0,
    ),
    Flag(
        "enable_cors",
        _parse_bool,
        "Let web pages of other origins call the API (CORS); --allow-origins says which.",
        False,
        is_switch=True,
    ),
    Flag(
        "allow_origins",
        _parse_origins,
        "With --enable-cors: the origins that may call the API, separated by commas, or * for any.",
        "*",
    ),
    Flag(
        "disable_metrics",
        _parse_bool,
        "Serve no Prometheus metrics: no /metrics on the server, no metrics port on the worker.",
        False,
        is_switch=True,
    ),
    Flag(
        "worker_metrics_port", _parse_port, "Port of the worker's Prometheus metrics (/metrics).", 10151
    ),
    Flag(
        "metrics_token",
        _parse_str,
        "Bearer token that Prometheus sends to read /metrics (server and worker); an admin API key works "
        "too. Prefer GPUSTACK_METRICS_TOKEN or the config file: other local users can see a command line.",
    ),
    Flag(
        "huggingface_token",
        _parse_str,
        "Token for private and gated Hugging Face repositories (HF_TOKEN works too). Prefer "
        "GPUSTACK_HUGGINGFACE_TOKEN or the config file: other local users can see a command line.",
    ),
    Flag(
        "ollama_library_base_url",
        _parse_url,
        "Registry of the Ollama library that models are pulled from.",
        "https://registry.ollama.ai",
    ),
    Flag(
        "model_catalog_file",
        _parse_path,
        "YAML file of models offered for one-click deployment, instead of the built-in catalog.",
    ),
    Flag("resources", _parse_resources, "Virtual GPU devices (config file only).", None, cli=False),
)

FLAGS_BY_NAME = {flag.name: flag for flag in FLAGS}


@dataclass
class Config:
    """Everything a gpustack process is configured with, resolved and validated."""

    data_dir: str
    cache_dir: str
    log_dir: str
    bin_dir: str
    config_file: str | None = None
    debug: bool = False
    token: str | None = None
    token_file: str | None = None
    host: str = "0.0.0.0"
    port: int = 80
    ssl_keyfile: str | None = None
    ssl_certfile: str | None = None
    trusted_proxies: list[str] = field(default_factory=list)
    database_url: str = ""
    disable_worker: bool = False
    bootstrap_password: str | None = None
    server_urls: list[str] = field(default_factory=list)  # --server-url: the servers a worker joins
    worker_name: str | None = None
    worker_ip: str | None = None
    worker_port: int = 10150
    worker_labels: dict[str, str] = field(default_factory=dict)
    system_reserved: SystemReserved = field(default_factory=SystemReserved)
    service_port_range: tuple[int, int] = (40000, 40063)
    disable_rpc_servers: bool = False
    rpc_server_port_range: tuple[int, int] = (40064, 40095)
    ray_port_range: tuple[int, int] = (40096, 40999)
    enable_ray: bool = False
    heartbeat_interval: float = 5.0
    worker_lost_grace: float = 90.0
    gateway_max_body_size: int = 32 * 1024**2
    gateway_max_in_flight: int = 4096
    gateway_model_max_in_flight: int = 0
    enable_cors: bool = False
    allow_origins: list[str] = field(default_factory=lambda: ["*"])
    disable_metrics: bool = False
    worker_metrics_port: int = 10151
    metrics_token: str | None = None
    huggingface_token: str | None = None
    ollama_library_base_url: str = "https://registry.ollama.ai"
    model_catalog_file: str | None = None
    resources: list[GPUDevice] = field(default_factory=list)

    @property
    def server_url(self) -> str | None:
        """The first server a worker joins; None for a server."""
        return self.server_urls[0] if self.server_urls else None

    @property
    def is_server(self) -> bool:
        return not self.server_urls

    @property
    def runs_worker(self) -> bool:
        return not self.is_server or not self.disable_worker


def _shown(name: str, raw: Any) -> str:
    """How a rejected value is echoed back: secrets are not."""
    if name in ("token", "bootstrap_password", "metrics_token", "huggingface_token"):
        return "a value (hidden)"
    if name == "database_url":
        return repr(re.sub(r"://[^@/]*@", "://***@", str(raw)))
    return repr(raw)


def _read_config_file(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            content = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"--config-file: {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"--config-file: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"--config-file: {path} is not valid YAML{where}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"--config-file: {path} must hold a mapping of option names to values")
    for key in content:
        if key not in FLAGS_BY_NAME or key == "config_file":
            known = ", ".join(f.name for f in FLAGS if f.name != "config_file")
            raise ConfigError(f"--config-file: unknown key {key!r} in {path}; known keys: {known}")
    return content


def _check_tls(resolved: dict[str, Any]) -> None:
    """Both TLS files or neither, each readable; the default port becomes 443 with TLS."""
    given = [name for name in ("ssl_keyfile", "ssl_certfile") if resolved.get(name)]
    if len(given) == 1:
        other = "--ssl-certfile" if given[0] == "ssl_keyfile" else "--ssl-keyfile"
        raise ConfigError(f"--{given[0].replace('_', '-')}: needs {other} too")
    for name in given:
        path = Path(resolved[name])
        if not path.is_file() or not os.access(path, os.R_OK):
            raise ConfigError(f"--{name.replace('_', '-')}: cannot read {path}")
    if "port" not in resolved:
        resolved["port"] = 443 if given else 80


def _read_token_file(resolved: dict[str, Any]) -> None:
    """--token-file: the token is read from a file, so that it never appears in the process list."""
    path = resolved.get("token_file")
    if not path:
        return
    if resolved.get("token"):
        raise ConfigError(
            "--token-file: a token is also given by --token (or GPUSTACK_TOKEN, or config key token); "
            "give one of them"
        )
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"--token-file: cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--token-file: {path} is not a text file holding the token") from None
    if not text or "\n" in text:
        raise ConfigError(f"--token-file: {path} must hold the token on one line")
    resolved["token"] = text


def load_config(cli_values: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
    """Merge the sources in precedence order and validate every value.

    `cli_values` holds only what was given on the command line (absent flags are missing or None).
    """

    def from_env(name: str) -> Any:
        return environ.get("GPUSTACK_" + name.upper())

    config_file = cli_values.get("config_file") or from_env("config_file")
    file_values = _read_config_file(_parse_path(config_file)) if config_file else {}

    resolved: dict[str, Any] = {}
    for flag in FLAGS:
        if flag.name == "config_file":
            continue
        for source, raw in (
            ("command line", cli_values.get(flag.name)),
            ("config file", file_values.get(flag.name)),
            ("environment", from_env(flag.name)),
        ):
            if raw is None or (flag.is_switch and source == "command line" and raw is False):
                continue
            if source == "command line" and not flag.cli:
                continue
            try:
                resolved[flag.name] = flag.parse(raw)
            except ValueError as exc:
                origin = {
                    "command line": flag.option,
                    "config file": f"{flag.option} (config key {flag.name} in {config_file})",
                    "environment": f"{flag.option} (environment GPUSTACK_{flag.name.upper()})",
                }[source]
                raise ConfigError(f"{origin}: {exc}; got {_shown(flag.name, raw)}") from None
            break
        else:
            if flag.default is not None:
                resolved[flag.name] = flag.parse(flag.default)

    data_dir = resolved.pop("data_dir", None) or default_data_dir()
    data_dir = str(Path(data_dir).expanduser().absolute())
    cache_dir = resolved.pop("cache_dir", None) or os.path.join(data_dir, "cache")
    log_dir = resolved.pop("log_dir", None) or os.path.join(data_dir, "log")
    bin_dir = resolved.pop("bin_dir", None) or os.path.join(data_dir, "bin")
    database_url = resolved.pop("database_url", None) or "sqlite:///" + os.path.join(data_dir, "database.db")
    server_urls = resolved.pop("server_url", None) or []
    if server_urls and resolved.get("disable_worker"):
        raise ConfigError("--disable-worker: cannot be combined with --server-url, which runs only a worker")
    resources = resolved.pop("resources", None) or []
    _read_token_file(resolved)
    _check_tls(resolved)
    return Config(
        data_dir=data_dir,
        cache_dir=str(Path(cache_dir).absolute()),
        log_dir=str(Path(log_dir).absolute()),
        bin_dir=str(Path(bin_dir).absolute()),
        config_file=config_file,
        database_url=database_url,
        server_urls=server_urls,
        resources=resources,
        **resolved,
    )
