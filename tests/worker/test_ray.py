"""Ray nodes for vLLM across workers: the command and environment (pure), and a real head and worker node
on loopback that form one cluster, listen on 127.0.0.1 only, refuse a node without the cluster's token,
and leave no process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from gpustack.worker.ray import (
    LOOPBACK_JOIN,
    PORTS_PER_NODE,
    RAY_CLI,
    RayNode,
    RayNodeSpec,
    RayPorts,
    RayRole,
    RayStartFailed,
    ray_auth_environment,
    ray_command,
    ray_log_path,
    ray_node_environment,
    vllm_driver_environment,
)
from gpustack.worker.ray_cluster import cluster_token, head_slots, node_slots, slots, temp_dir
from tests.conftest import free_port_range, require_or_skip
from tests.fixtures.safetensors_model import ray_executable

TOKEN = "0123456789abcdef0123456789abcdef"
PYTHON = Path("/env/bin/python")


def spec(role: RayRole, ip: str = "127.0.0.1", **kwargs: object) -> RayNodeSpec:
    defaults: dict[str, object] = {"temp_dir": Path("/tmp/ray-x"), "log_path": ray_log_path("/log", role)}
    if role is RayRole.WORKER:
        defaults["head_address"] = f"{ip}:40096"
    return RayNodeSpec(role=role, node_ip=ip, **{**defaults, **kwargs})  # type: ignore[arg-type]


def test_ray_ports_count_up_from_40096_and_cover_every_port_ray_would_pick() -> None:
    ports = RayPorts()
    named = [
        ports.gcs, ports.client_server, ports.node_manager, ports.object_manager, ports.dashboard_agent_grpc,
        ports.dashboard_agent_listen, ports.metrics_export, ports.runtime_env_agent, ports.autoscaler_metrics,
        ports.dashboard_metrics,
    ]  # fmt: skip
    assert named == list(range(40096, 40106))
    assert (ports.min_worker, ports.max_worker) == (40106, 40096 + PORTS_PER_NODE - 1)
    assert list(ports.all()) == list(range(40096, 40096 + PORTS_PER_NODE))


def test_ray_logs_are_ray_head_log_and_ray_worker_log() -> None:
    assert ray_log_path("/var/log/gpustack", RayRole.HEAD) == Path("/var/log/gpustack/ray-head.log")
    assert ray_log_path("/var/log/gpustack", RayRole.WORKER) == Path("/var/log/gpustack/ray-worker.log")


def test_head_command_binds_its_ports_to_the_node_ip_and_blocks() -> None:
    argv = ray_command(PYTHON, spec(RayRole.HEAD, "10.1.2.3", num_cpus=2, num_gpus=1))
    assert argv[:4] == ["/env/bin/python", "-c", RAY_CLI, "start"]
    for flag in (
        "--block", "--head", "--node-ip-address=10.1.2.3", "--port=40096", "--include-dashboard=false",
        "--dashboard-host=10.1.2.3", "--node-manager-port=40098", "--min-worker-port=40106",
        "--temp-dir=/tmp/ray-x", "--num-cpus=2", "--num-gpus=1", "--disable-usage-stats",
    ):  # fmt: skip
        assert flag in argv
    assert not any(arg.startswith("--address") for arg in argv)


def test_worker_node_joins_the_head_address_with_rays_own_cli_off_loopback() -> None:
    argv = ray_command(PYTHON, spec(RayRole.WORKER, "10.1.2.4", head_address="10.1.2.3:40096"))
    assert argv[:4] == ["/env/bin/python", "-c", RAY_CLI, "start"]
    assert "--address=10.1.2.3:40096" in argv and "--head" not in argv


def test_worker_node_on_loopback_is_started_through_the_join_shim() -> None:
    argv = ray_command(PYTHON, spec(RayRole.WORKER))
    assert argv[:4] == ["/env/bin/python", "-c", LOOPBACK_JOIN, "start"]
    assert "--address=127.0.0.1:40096" in argv


def test_loopback_nodes_keep_127_0_0_1_and_other_ips_use_ray_cluster_mode() -> None:
    assert ray_auth_environment(spec(RayRole.HEAD))["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in ray_auth_environment(spec(RayRole.HEAD, "10.1.2.3"))


def test_node_environment_drops_inherited_ray_settings_and_adds_the_token() -> None:
    env = ray_node_environment(
        spec(RayRole.HEAD, auth_token=TOKEN),
        {"PATH": "/bin", "RAY_ADDRESS": "elsewhere:1", "RAY_AUTH_MODE": "x"},
    )
    assert env["PATH"] == "/bin" and "RAY_ADDRESS" not in env
    assert (env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"]) == ("token", TOKEN)
    assert (env["AUTOSCALER_METRIC_PORT"], env["DASHBOARD_METRIC_PORT"]) == ("40104", "40105")


def test_vllm_driver_environment_points_at_the_head() -> None:
    env = vllm_driver_environment(
        spec(RayRole.WORKER, "10.1.2.4", head_address="10.1.2.3:40096", auth_token=TOKEN)
    )
    assert env["RAY_ADDRESS"] == "10.1.2.3:40096" and env["RAY_AUTH_TOKEN"] == TOKEN


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"ip": "not-an-ip"}, "not-an-ip"),
        ({"temp_dir": Path("/a/very/long/folder/name/that/ray/cannot/use/for/sockets")}, "shorter folder"),
        ({"auth_token": "short"}, "32 characters"),
    ],
)
def test_ray_node_spec_refuses_what_ray_could_not_run_with_a_reason(
    kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        spec(RayRole.HEAD, **kwargs)  # type: ignore[arg-type]


def test_ray_worker_node_without_head_address_is_refused() -> None:
    with pytest.raises(ValueError, match="head's address"):
        RayNodeSpec(RayRole.WORKER, "127.0.0.1", Path("/tmp/r"), Path("/log/ray-worker.log"))


# --- real nodes on loopback -------------------------------------------------------------------------


@pytest.fixture
def ray() -> Path:
    path = ray_executable()
    require_or_skip(path is not None, "Ray (in the vLLM environment of scripts/install-vllm.sh)")
    assert path is not None
    return path


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="gst-ray-", dir="/tmp"))  # Ray's socket paths need a short one
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def node_processes(node: RayNode) -> list[psutil.Process]:
    assert node.process is not None
    leader = psutil.Process(node.process.pid)
    return [leader, *leader.children(recursive=True)]


def group_members(pgid: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid:
                members.append(process.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


async def cluster_status(ray: Path, head: RayNodeSpec) -> str:
    status = await asyncio.create_subprocess_exec(
        str(ray), "status", f"--address={head.address}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **ray_auth_environment(head)},
    )  # fmt: skip
    return (await asyncio.wait_for(status.communicate(), 60))[0].decode()


DRIVER = """
import ray
ray.init()
@ray.remote(num_cpus=1)
def node():
    import time
    time.sleep(1)
    return ray.get_runtime_context().get_node_id()
print(len(set(ray.get([node.remote(), node.remote()]))))
"""


async def tasks_ran_on_nodes(ray: Path, head: RayNodeSpec) -> int:
    driver = await asyncio.create_subprocess_exec(
        str(ray.with_name("python")), "-c", DRIVER,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **vllm_driver_environment(head)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(driver.communicate(), 120)
    assert driver.returncode == 0, err.decode()[-3000:]
    return int(out.decode().split()[-1])


def active_nodes(status: str) -> int:
    if "Active:" not in status:
        return 0
    return status.split("Active:")[1].split("Pending:")[0].count("node_")


async def test_head_and_worker_node_form_one_cluster_on_loopback_and_stop_leaving_nothing(
    ray: Path, short_tmp: Path
) -> None:
    base, _ = free_port_range(2 * PORTS_PER_NODE)
    head = RayNode(ray.with_name("python"), RayNodeSpec(
        RayRole.HEAD, "127.0.0.1", short_tmp / "h", ray_log_path(short_tmp / "log", RayRole.HEAD),
        RayPorts(base), num_cpus=1, object_store_bytes=100_000_000, auth_token=TOKEN,
    ))  # fmt: skip
    worker_spec = RayNodeSpec(
        RayRole.WORKER, "127.0.0.1", short_tmp / "w", ray_log_path(short_tmp / "log", RayRole.WORKER),
        RayPorts(base + PORTS_PER_NODE), head_address=head.spec.address, num_cpus=1,
        object_store_bytes=100_000_000, auth_token=TOKEN,
    )  # fmt: skip
    worker = RayNode(ray.with_name("python"), worker_spec)
    groups: list[int] = []
    try:
        await head.start()
        assert head.process is not None
        groups.append(head.process.pid)
        await worker.start()
        assert worker.process is not None
        groups.append(worker.process.pid)

        # Ray's status is the autoscaler's view, refreshed every few seconds: wait for both nodes in it.
        output = await cluster_status(ray, head.spec)
        for _ in range(60):
            if active_nodes(output) == 2:
                break
            await asyncio.sleep(0.5)
            output = await cluster_status(ray, head.spec)
        assert active_nodes(output) == 2, output
        assert "2.0 CPU" in output
        # A driver as vLLM's would be (RAY_ADDRESS and the token from vllm_driver_environment) gets a
        # task run on each node: the raylets and object managers really talk over loopback.
        assert await tasks_ran_on_nodes(ray, head.spec) == 2

        pids = {process.pid for node in (head, worker) for process in node_processes(node)}
        listening = [
            conn.laddr
            for conn in psutil.net_connections(kind="inet")
            if conn.pid in pids and conn.status == psutil.CONN_LISTEN
        ]
        assert listening, "no Ray process listens"
        assert all(address.ip in ("127.0.0.1", "::ffff:127.0.0.1") for address in listening), listening
        ports = {address.port for address in listening}
        assert {head.spec.ports.gcs, worker_spec.ports.node_manager} <= ports
    finally:
        await worker.stop()
        await head.stop()
    assert not head.running and not worker.running
    for pgid in groups:
        assert group_members(pgid) == [], f"processes of Ray node group {pgid} outlived it"
    log = (short_tmp / "log" / "ray-head.log").read_text()
    assert "gpustack starts:" in log and "Ray runtime started" in log
    assert "Ray runtime started" in (short_tmp / "log" / "ray-worker.log").read_text()


async def test_worker_node_with_a_wrong_token_is_refused_with_ray_words(ray: Path, short_tmp: Path) -> None:
    base, _ = free_port_range(2 * PORTS_PER_NODE)
    head = RayNode(ray.with_name("python"), RayNodeSpec(
        RayRole.HEAD, "127.0.0.1", short_tmp / "h", ray_log_path(short_tmp / "log", RayRole.HEAD),
        RayPorts(base), num_cpus=1, object_store_bytes=100_000_000, auth_token=TOKEN,
    ))  # fmt: skip
    intruder = RayNode(ray.with_name("python"), RayNodeSpec(
        RayRole.WORKER, "127.0.0.1", short_tmp / "w", ray_log_path(short_tmp / "log", RayRole.WORKER),
        RayPorts(base + PORTS_PER_NODE), head_address=head.spec.address, num_cpus=1,
        object_store_bytes=100_000_000, auth_token="f" * 32,
    ))  # fmt: skip
    try:
        await head.start()
        refused = "(?s)ray-worker.log.*Authentication token is missing or incorrect"
        with pytest.raises(RayStartFailed, match=refused):
            await intruder.start(timeout=45)
        assert not intruder.running
    finally:
        await intruder.stop()
        await head.stop()


# --- one cluster per instance (worker/ray_cluster.py) -----------------------------------------------


def test_the_ray_port_range_is_cut_into_head_slots_and_worker_node_slots() -> None:
    assert slots((40096, 40999)) == list(range(40096, 40999 - PORTS_PER_NODE + 2, PORTS_PER_NODE))
    heads, nodes = head_slots((40096, 40999)), node_slots((40096, 40999))
    assert heads[0] == 40096 and len(heads) + len(nodes) == len(slots((40096, 40999)))
    assert not set(heads) & set(nodes) and max(heads) < min(nodes)
    assert head_slots((40096, 40096 + PORTS_PER_NODE - 1)) == [40096]  # one slot: a head, no worker node
    assert node_slots((40096, 40096 + PORTS_PER_NODE - 1)) == []
    assert slots((40096, 40096 + PORTS_PER_NODE - 2)) == []  # too small for one node


def test_each_instances_cluster_has_a_token_every_worker_derives_from_the_cluster_token() -> None:
    token = cluster_token("cluster-secret", 7)
    assert token == cluster_token("cluster-secret", 7) and len(token) >= 32
    assert token != cluster_token("cluster-secret", 8) and token != cluster_token("other-secret", 7)
    spec(RayRole.HEAD, auth_token=token)  # long enough for Ray


def test_ray_session_folders_are_short_and_per_slot() -> None:
    folder = temp_dir(40096)
    assert str(folder).endswith(f"gst-ray-{os.getuid()}-40096") and len(str(folder)) <= 40
