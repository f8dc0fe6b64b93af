"""`gpustack service` and install.sh: each platform's service definition checked by its own rules (systemd's
verifier, plistlib and launchd's documented keys, nssm's command syntax and Windows' command-line rules),
installing again updates and restarts, uninstall keeps the data, and here, where systemd is not running,
the install says what it would do and changes nothing."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpustack.cli.service import apply, check_start_args
from gpustack.cli.service_plan import (
    Installed,
    Platform,
    RemovePath,
    Run,
    WriteFile,
    plan_install,
    plan_uninstall,
)
from gpustack.cli.service_render import (
    LINUX_ENV_FILE,
    PLIST_PATH,
    UNIT_PATH,
    EnvFileError,
    ServiceSpec,
    launchd_plist,
    parse_env_file,
    systemd_unit,
)
from tests.conftest import require_or_skip

ROOT = Path(__file__).resolve().parents[2]
GPUSTACK = [str(Path(sys.executable).parent / "gpustack")]
# The FAQ's proxy settings, as it tells users to write them.
FAQ_ENV = """\
HTTP_PROXY="http://username:password@proxy-server:port"
HTTPS_PROXY="http://username:password@proxy-server:port"
NO_PROXY="localhost,127.0.0.1,192.168.0.0/24,172.16.0.0/16,10.0.0.0/8"
HF_ENDPOINT=https://hf-mirror.com
"""
SYSTEMD_RUNNING = Path("/run/systemd/system").is_dir()


def gpustack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpustack", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_the_env_file_reads_as_systemd_does() -> None:
    env = parse_env_file(FAQ_ENV + "# a comment\n\nexport A='single quoted'\n", "/etc/default/gpustack")
    assert env["HTTP_PROXY"] == "http://username:password@proxy-server:port"
    assert env["NO_PROXY"].startswith("localhost,") and env["A"] == "single quoted"
    with pytest.raises(EnvFileError, match="line 2: expected KEY=VALUE"):
        parse_env_file("A=1\nnot a setting\n", "/etc/default/gpustack")


def test_the_systemd_unit_passes_systemds_own_verifier(tmp_path: Path) -> None:
    require_or_skip(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian's systemd package)")
    args = ["--port", "9090", "--data-dir", "/srv/gpu stack", "--worker-labels", "rack=a1,cost=50%"]
    result = gpustack("service", "render", "systemd", "--", *args)
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "gpustack.service"
    unit.write_text(result.stdout)
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    # It warns (and still exits 0) about a directive it cannot parse: a clean unit says nothing.
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    assert "EnvironmentFile=-/etc/default/gpustack" in result.stdout
    assert 'start --port 9090 --data-dir "/srv/gpu stack" --worker-labels rack=a1,cost=50%%' in result.stdout


def test_a_unit_for_a_missing_executable_fails_the_verifier(tmp_path: Path) -> None:
    require_or_skip(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian's systemd package)")
    unit = tmp_path / "gpustack.service"
    unit.write_text(systemd_unit(ServiceSpec(["/nonexistent/gpustack"], ["--port", "80"])))
    verified = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verified.returncode != 0 and "not executable" in verified.stderr  # so the check above means it


def test_the_launchd_plist_has_launchds_documented_keys() -> None:
    env = parse_env_file(FAQ_ENV, "/etc/default/gpustack")
    document = plistlib.loads(launchd_plist(ServiceSpec(GPUSTACK, ["--port", "9090"]), env))
    assert document["Label"] == "ai.gpustack"
    assert document["ProgramArguments"] == [*GPUSTACK, "start", "--port", "9090"]
    assert document["RunAtLoad"] is True and document["KeepAlive"] is True
    assert document["EnvironmentVariables"]["HF_ENDPOINT"] == "https://hf-mirror.com"
    assert document["EnvironmentVariables"]["HTTPS_PROXY"] == "http://username:password@proxy-server:port"
    assert document["StandardOutPath"] == document["StandardErrorPath"] == "/var/log/gpustack.log"
    known = {
        "Label", "ProgramArguments", "EnvironmentVariables", "RunAtLoad", "KeepAlive", "StandardOutPath",
        "StandardErrorPath", "ExitTimeOut", "SoftResourceLimits", "HardResourceLimits",
    }  # fmt: skip
    assert set(document) <= known


def windows_argv(command_line: str) -> list[str]:
    """How a Windows program splits its command line (Microsoft's documented rules for the C runtime and
    CommandLineToArgvW): 2n backslashes + quote -> n backslashes and a quote toggle; 2n+1 -> n and a
    literal quote; other backslashes are literal."""
    words: list[str] = []
    word, quoted, started, i = "", False, False, 0
    while i < len(command_line):
        c = command_line[i]
        if c == "\\":
            j = i
            while j < len(command_line) and command_line[j] == "\\":
                j += 1
            count = j - i
            if j < len(command_line) and command_line[j] == '"':
                word += "\\" * (count // 2)
                if count % 2:
                    word += '"'
                    j += 1
                i, started = j, True
                continue
            word, i, started = word + "\\" * count, j, True
            continue
        if c == '"':
            quoted, started = not quoted, True
        elif c in " \t" and not quoted:
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + c, True
        i += 1
    if started:
        words.append(word)
    return words


def test_the_windows_service_is_made_with_nssms_documented_commands() -> None:
    tricky = ["--port", "9090", "--data-dir", "C:\\Program Files\\gp data\\", "--worker-name", 'say "hi"']
    spec = ServiceSpec(["C:\\GPUStack\\venv\\Scripts\\gpustack.exe"], tricky)
    appdata = "C:\\Users\\ops\\AppData\\Roaming"
    installed = Installed(env_file=FAQ_ENV, windows_appdata=appdata, nssm="nssm.exe")
    runs = [
        step.argv for step in plan_install(Platform.WINDOWS, spec, installed).steps if isinstance(step, Run)
    ]
    assert runs[0] == ["nssm.exe", "install", "GPUStack", spec.command[0]]
    settings = {argv[3]: argv[4:] for argv in runs if argv[1] == "set"}
    # AppParameters is one string that the program splits back into exactly the arguments given.
    assert windows_argv(settings["AppParameters"][0]) == ["start", *tricky]
    assert "HF_ENDPOINT=https://hf-mirror.com" in settings["AppEnvironmentExtra"]
    assert f"APPDATA={appdata}" in settings["AppEnvironmentExtra"]  # the user's data dir and gpustack.env
    assert settings["Start"] == ["SERVICE_AUTO_START"]
    assert settings["AppStdout"] == [f"{appdata}\\gpustack\\log\\gpustack.log"]
    assert runs[-1] == ["nssm.exe", "start", "GPUStack"]
    # Installed already: stopped, pointed at the (new) executable and restarted, never installed twice.
    again = plan_install(Platform.WINDOWS, spec, Installed(FAQ_ENV, True, appdata, "nssm.exe"))
    verbs = [step.argv[1] for step in again.steps if isinstance(step, Run)]
    assert "install" not in verbs and verbs[0] == "stop" and verbs[-1] == "start"


def test_installing_again_with_other_arguments_rewrites_the_unit_and_restarts(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")

    first = plan_install(Platform.LINUX, ServiceSpec(GPUSTACK, ["--port", "80"]), Installed())
    assert apply(first, root=tmp_path, run=run) is None
    env_file = tmp_path / LINUX_ENV_FILE.lstrip("/")
    assert env_file.stat().st_mode & 0o777 == 0o600  # proxy passwords live there
    env_file.write_text("HF_ENDPOINT=https://hf-mirror.com\n")
    calls.clear()

    again = plan_install(
        Platform.LINUX, ServiceSpec(GPUSTACK, ["--port", "9090"]), Installed(env_file.read_text(), True)
    )
    assert apply(again, root=tmp_path, run=run) is None
    unit = (tmp_path / UNIT_PATH.lstrip("/")).read_text()
    assert "start --port 9090" in unit and "--port 80\n" not in unit
    assert env_file.read_text() == "HF_ENDPOINT=https://hf-mirror.com\n"  # the user's settings stay
    assert calls == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "gpustack.service"],
        ["systemctl", "restart", "gpustack.service"],
    ]


def test_macos_reloads_the_plist_with_the_env_file_read_again() -> None:
    steps = plan_install(Platform.MACOS, ServiceSpec(GPUSTACK, []), Installed("HF_ENDPOINT=x\n", True)).steps
    assert steps[0] == Run(["launchctl", "bootout", "system", PLIST_PATH], may_fail=True)
    written = next(step for step in steps if isinstance(step, WriteFile))
    assert plistlib.loads(written.content)["EnvironmentVariables"] == {"HF_ENDPOINT": "x"}
    assert steps[-1] == Run(["launchctl", "bootstrap", "system", PLIST_PATH])


def test_uninstall_keeps_the_data_dir_unless_asked() -> None:
    kept = plan_uninstall(Platform.LINUX, Installed(), "/var/lib/gpustack", delete_data=False)
    assert RemovePath(UNIT_PATH) in kept.steps
    assert not any(isinstance(s, RemovePath) and s.path == "/var/lib/gpustack" for s in kept.steps)
    deleted = plan_uninstall(Platform.LINUX, Installed(), "/var/lib/gpustack", delete_data=True)
    assert RemovePath("/var/lib/gpustack") in deleted.steps and RemovePath(LINUX_ENV_FILE) in deleted.steps


def test_arguments_that_start_would_refuse_are_refused_before_installing() -> None:
    assert "--port" in (check_start_args(["--port", "abc"], {}) or "")
    assert "unknown arguments" in (check_start_args(["--no-such-flag"], {}) or "")
    assert "--token" in (check_start_args(["--server-url", "http://10.0.0.1"], {}) or "")
    assert check_start_args(["--server-url", "http://10.0.0.1"], {"GPUSTACK_TOKEN": "t"}) is None
    result = gpustack("service", "install", "--", "--port", "abc")
    assert result.returncode == 2 and "--port: accepts a port number" in result.stderr


@pytest.mark.skipif(SYSTEMD_RUNNING, reason="on a host running systemd this would install a real service")
def test_service_install_without_systemd_says_what_it_would_do_and_changes_nothing() -> None:
    require_or_skip(shutil.which("systemctl") is not None, "systemctl (Debian's systemd package)")
    existed = Path(UNIT_PATH).exists()
    result = gpustack("service", "install", "--", "--port", "9090")
    assert result.returncode == 1
    assert f"write {UNIT_PATH}" in result.stdout and "run systemctl restart gpustack.service" in result.stdout
    assert "systemd is not running here" in result.stderr and "nothing was changed" in result.stderr
    assert "Traceback" not in result.stderr
    assert Path(UNIT_PATH).exists() == existed


@pytest.mark.skipif(SYSTEMD_RUNNING, reason="on a host running systemd this would install a real service")
def test_install_script_in_a_scratch_root_without_systemd_fails_cleanly(tmp_path: Path) -> None:
    prefix = tmp_path / "opt" / "gpustack"
    env = {**os.environ, "INSTALL_PREFIX": str(prefix)}
    result = subprocess.run(
        ["sh", str(ROOT / "install.sh"), "--port", "9090", "--worker-name", "gpu's box"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"create the Python environment {prefix}/venv" in result.stdout
    assert f"pip install --upgrade {ROOT}" in result.stdout  # the checkout the script sits in
    assert "writes /etc/systemd/system/gpustack.service to run:" in result.stdout
    assert "--worker-name 'gpu'\\''s box'" in result.stdout
    assert "systemd is not running here" in result.stderr and "nothing was changed" in result.stderr
    assert list(tmp_path.iterdir()) == []  # not even the prefix

    dry = subprocess.run(
        ["sh", str(ROOT / "install.sh"), "--port", "9090"],
        capture_output=True, text=True, env={**env, "INSTALL_DRY_RUN": "1"}, timeout=60,
    )  # fmt: skip
    assert dry.returncode == 0 and "nothing was changed" in dry.stdout and list(tmp_path.iterdir()) == []
