"""Settings come from the command line, then the config file, then GPUSTACK_* variables, then defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpustack.cli import build_parser
from gpustack.config import ConfigError, GiB, load_config


def cli(*argv: str) -> dict:
    args = build_parser().parse_args(["start", *argv])
    return {k: v for k, v in vars(args).items() if k not in ("handler", "command")}


def test_defaults_follow_the_faq(tmp_path: Path) -> None:
    config = load_config(cli(), {})
    assert config.host == "0.0.0.0"
    assert config.port == 80
    assert config.worker_port == 10150
    assert config.data_dir == "/var/lib/gpustack"
    assert config.cache_dir == "/var/lib/gpustack/cache"
    assert config.log_dir == "/var/lib/gpustack/log"
    assert config.bin_dir == "/var/lib/gpustack/bin"
    assert config.database_url == "sqlite:////var/lib/gpustack/database.db"
    assert config.service_port_range == (40000, 40063)
    assert config.system_reserved.ram == 2 * GiB and config.system_reserved.vram == 1 * GiB
    assert config.is_server and config.runs_worker


def test_directories_follow_data_dir_unless_given(tmp_path: Path) -> None:
    config = load_config(cli("--data-dir", str(tmp_path), "--cache-dir", "/data/model-cache"), {})
    assert config.cache_dir == "/data/model-cache"
    assert config.log_dir == str(tmp_path / "log")
    assert config.database_url == f"sqlite:///{tmp_path}/database.db"


def test_command_line_beats_config_file_beats_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("worker_name: New-Name\nport: 9090\ndebug: true\n")
    environ = {"GPUSTACK_PORT": "7070", "GPUSTACK_WORKER_NAME": "env-name", "GPUSTACK_WORKER_PORT": "12000"}
    config = load_config(cli("--config-file", str(config_file), "--port", "8080"), environ)
    assert config.port == 8080  # command line
    assert config.worker_name == "New-Name"  # config file over environment
    assert config.worker_port == 12000  # environment over default
    assert config.debug is True


def test_config_file_can_come_from_the_environment(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("worker_ip: 10.10.10.1\n")
    config = load_config(cli(), {"GPUSTACK_CONFIG_FILE": str(config_file)})
    assert config.worker_ip == "10.10.10.1"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--port", "abc"), "--port: accepts a port number between 1 and 65535"),
        (("--port", "70000"), "--port: accepts a port number"),
        (("--worker-ip", "10.10.10"), "--worker-ip: accepts an IPv4 or IPv6 address"),
        (("--server-url", "10.0.0.1"), "--server-url: accepts an http:// or https:// URL"),
        (("--service-port-range", "40063-40000"), "--service-port-range: accepts a range N1-N2"),
        (("--system-reserved", "ram=2"), "--system-reserved: accepts JSON in GiB"),
        (("--system-reserved", '{"disk": 2}'), "unknown key 'disk'"),
        (("--database-url", "oracle://x"), "--database-url: accepts sqlite:///"),
    ],
)
def test_a_bad_value_names_the_flag_and_what_it_accepts(argv: tuple[str, ...], expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(cli(*argv), {})
    assert expected in str(error.value)
    assert "\n" not in str(error.value)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="GPUSTACK_WORKER_PORT"):
        load_config(cli(), {"GPUSTACK_WORKER_PORT": "nope"})


def test_unknown_config_file_key_is_rejected(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("worker_nmae: typo\n")
    with pytest.raises(ConfigError, match="unknown key 'worker_nmae'"):
        load_config(cli("--config-file", str(config_file)), {})


def test_missing_or_invalid_config_file_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(cli("--config-file", str(tmp_path / "missing.yaml")), {})
    broken = tmp_path / "broken.yaml"
    broken.write_text("port: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(cli("--config-file", str(broken)), {})


def test_system_reserved_accepts_deprecated_keys() -> None:
    config = load_config(cli("--system-reserved", '{"memory": 4, "gpu_memory": 0.5}'), {})
    assert config.system_reserved.ram == 4 * GiB
    assert config.system_reserved.vram == GiB // 2


def test_virtual_gpus_come_from_the_resources_section(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        "resources:\n"
        "  gpu_devices:\n"
        "    - {name: NVIDIA GeForce RTX 4090, vendor: NVIDIA, type: cuda, memory: 24GiB}\n"
        "    - {name: Ascend 910B, vendor: Huawei, type: npu, memory: 64 GiB, index: 3}\n"
    )
    config = load_config(cli("--config-file", str(config_file)), {})
    assert [(gpu.index, gpu.type.value, gpu.memory.total) for gpu in config.resources] == [
        (0, "cuda", 24 * GiB),
        (3, "npu", 64 * GiB),
    ]
    assert all(gpu.virtual for gpu in config.resources)


def test_resources_with_a_bad_type_is_rejected(tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text("resources:\n  gpu_devices:\n    - {name: x, type: tpu, memory: 1GiB}\n")
    with pytest.raises(ConfigError, match=r"gpu_devices\[0\].type must be one of cuda, rocm"):
        load_config(cli("--config-file", str(config_file)), {})


def test_a_worker_cannot_disable_the_worker() -> None:
    with pytest.raises(ConfigError, match="--disable-worker"):
        load_config(cli("--server-url", "http://10.0.0.1", "--disable-worker"), {})


def test_switches_from_environment() -> None:
    config = load_config(cli(), {"GPUSTACK_DISABLE_WORKER": "true", "GPUSTACK_DEBUG": "1"})
    assert config.disable_worker and config.debug


def test_a_rejected_database_url_does_not_echo_its_password() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(cli("--database-url", "postgress://user:s3cret@db:5432/gpustack"), {})
    assert "s3cret" not in str(error.value) and "postgress://***@db:5432/gpustack" in str(error.value)
