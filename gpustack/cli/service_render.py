"""The service definitions, as text: a systemd unit, a launchd plist, and the nssm commands of a Windows
service. Pure: what to run and with which environment in, the files' content out."""

from __future__ import annotations

import plistlib
import re
import subprocess
from dataclasses import dataclass, field

UNIT_NAME = "gpustack.service"
UNIT_PATH = "/etc/systemd/system/gpustack.service"
LINUX_ENV_FILE = "/etc/default/gpustack"  # the FAQ's; macOS reads the same file
LAUNCHD_LABEL = "ai.gpustack"
PLIST_PATH = "/Library/LaunchDaemons/ai.gpustack.plist"
POSIX_LOG_FILE = "/var/log/gpustack.log"
WINDOWS_SERVICE = "GPUStack"

ENV_FILE_TEMPLATE = """\
# Environment of the gpustack service, one KEY=VALUE per line (quotes allowed), for example:
#   HF_ENDPOINT=https://hf-mirror.com
#   HTTP_PROXY="http://username:password@proxy-server:port"
#   NO_PROXY="localhost,127.0.0.1,10.0.0.0/8"
#   GPUSTACK_METRICS_TOKEN=<a secret for Prometheus>
# After a change: {apply}
"""


@dataclass(frozen=True)
class ServiceSpec:
    """What the service runs: `command` (the gpustack executable, or python -m gpustack) plus `start` and
    the user's arguments."""

    command: list[str]
    args: list[str] = field(default_factory=list)

    @property
    def argv(self) -> list[str]:
        return [*self.command, "start", *self.args]


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvFileError(ValueError):
    """A line of the environment file that is not KEY=VALUE; the message names the line."""


def parse_env_file(text: str, where: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile reads them: blank lines and # comments skipped, an
    optional `export `, values optionally in single or double quotes."""
    env: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not _ENV_NAME.match(name):
            raise EnvFileError(f"{where}, line {number}: expected KEY=VALUE, got {raw.strip()[:80]!r}")
        value = value.strip()
        quote = value[0] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else ""
        if quote:
            value = value[1:-1]
        if quote == '"':
            value = re.sub(r'\\(["\\$`])', r"\1", value)  # as a shell would read it
        env[name] = value
    return env


def systemd_quote(word: str) -> str:
    """One ExecStart word: % and $ doubled (systemd expands specifiers and variables), quoted when it
    holds whitespace, quotes or backslashes."""
    escaped = word.replace("%", "%%").replace("$", "$$")
    if escaped and not re.search(r"[\s\"'\\;]", escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(spec: ServiceSpec) -> str:
    exec_start = " ".join(systemd_quote(word) for word in spec.argv)
    return f"""\
# Written by `gpustack service install`; run it again (or the install script) to change the arguments.
# Settings such as proxies and HF_ENDPOINT go in {LINUX_ENV_FILE}; then: systemctl restart gpustack
[Unit]
Description=GPUStack: serve AI models on your GPU cluster
Documentation=https://github.com/gpustack/gpustack
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
EnvironmentFile=-{LINUX_ENV_FILE}
ExecStart={exec_start}
Restart=always
RestartSec=3
# The server stops its engines itself (TERM, grace, KILL); systemd waits for that.
KillMode=mixed
TimeoutStopSec=60
LimitNOFILE=65535
StandardOutput=append:{POSIX_LOG_FILE}
StandardError=append:{POSIX_LOG_FILE}

[Install]
WantedBy=multi-user.target
"""


def launchd_plist(spec: ServiceSpec, env: dict[str, str]) -> bytes:
    """launchd reads no environment file: the install copies /etc/default/gpustack's variables in, which
    is why the FAQ says to run the install again after editing it."""
    document = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": spec.argv,
        "EnvironmentVariables": dict(sorted(env.items())),
        "RunAtLoad": True,
        "KeepAlive": True,
        "StandardOutPath": POSIX_LOG_FILE,
        "StandardErrorPath": POSIX_LOG_FILE,
        "ExitTimeOut": 60,
        "SoftResourceLimits": {"NumberOfFiles": 65535},
        "HardResourceLimits": {"NumberOfFiles": 65535},
    }
    return plistlib.dumps(document, fmt=plistlib.FMT_XML, sort_keys=False)


def windows_command_line(words: list[str]) -> str:
    """Words joined as Windows programs split them (CommandLineToArgvW's rules)."""
    return subprocess.list2cmdline(words)


def nssm_settings(spec: ServiceSpec, env: dict[str, str], log_file: str) -> list[list[str]]:
    """`nssm set GPUStack <parameter> <value...>` for everything but the executable (nssm's documented
    parameters: AppParameters, AppEnvironmentExtra, AppStdout, AppStderr, AppRotateFiles, Start, ...)."""
    name = WINDOWS_SERVICE
    settings = [
        ["set", name, "AppParameters", windows_command_line(spec.argv[1:])],
        ["set", name, "DisplayName", "GPUStack"],
        ["set", name, "Description", "GPUStack: serve AI models on your GPU cluster"],
        ["set", name, "Start", "SERVICE_AUTO_START"],
        ["set", name, "AppStdout", log_file],
        ["set", name, "AppStderr", log_file],
        ["set", name, "AppRotateFiles", "1"],
        ["set", name, "AppRotateBytes", str(100 * 1024 * 1024)],
        ["set", name, "AppStopMethodConsole", "30000"],
    ]
    if env:
        settings.append(["set", name, "AppEnvironmentExtra", *(f"{k}={v}" for k, v in sorted(env.items()))])
    else:
        settings.append(["reset", name, "AppEnvironmentExtra"])
    return settings
