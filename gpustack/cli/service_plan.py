"""What installing or removing the gpustack service does on each platform, as a list of steps (files to
write or remove, commands to run). Pure: the current state in, the plan out; `service.py` carries it out."""

from __future__ import annotations

import ntpath
from dataclasses import dataclass, field
from enum import Enum

from gpustack.cli.service_render import (
    ENV_FILE_TEMPLATE,
    LINUX_ENV_FILE,
    PLIST_PATH,
    UNIT_NAME,
    UNIT_PATH,
    WINDOWS_SERVICE,
    ServiceSpec,
    launchd_plist,
    nssm_settings,
    parse_env_file,
    systemd_unit,
    windows_command_line,
)


class Platform(str, Enum):
    LINUX = "linux"
    MACOS = "macos"
    WINDOWS = "windows"


@dataclass(frozen=True)
class WriteFile:
    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True)
class MakeDir:
    path: str


@dataclass(frozen=True)
class RemovePath:
    path: str


@dataclass(frozen=True)
class Run:
    argv: list[str]
    may_fail: bool = False  # e.g. stopping a service that is not loaded


Step = WriteFile | MakeDir | RemovePath | Run


@dataclass(frozen=True)
class Installed:
    """What is on the machine before the plan runs."""

    env_file: str | None = None  # its text; None when absent
    service: bool = False  # the unit, plist or Windows service exists
    windows_appdata: str = ""  # the installing user's %APPDATA% (Windows)
    nssm: str = "nssm"


@dataclass
class Plan:
    steps: list[Step] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = []
        for step in self.steps:
            if isinstance(step, WriteFile):
                lines.append(f"write {step.path} (mode {step.mode:o})")
            elif isinstance(step, MakeDir):
                lines.append(f"create the folder {step.path}")
            elif isinstance(step, RemovePath):
                lines.append(f"remove {step.path}")
            else:
                shown = windows_command_line(step.argv) if "\\" in step.argv[0] else " ".join(step.argv)
                lines.append(f"run {shown}" + (" (failure ignored)" if step.may_fail else ""))
        return lines


def windows_paths(appdata: str) -> tuple[str, str, str]:
    """(data dir, environment file, service log) under the installing user's %APPDATA%."""
    data_dir = ntpath.join(appdata, "gpustack")
    return data_dir, ntpath.join(data_dir, "gpustack.env"), ntpath.join(data_dir, "log", "gpustack.log")


def env_file_path(platform: Platform, installed: Installed) -> str:
    if platform is Platform.WINDOWS:
        return windows_paths(installed.windows_appdata)[1]
    return LINUX_ENV_FILE


def plan_install(platform: Platform, spec: ServiceSpec, installed: Installed) -> Plan:
    """Install, or update and restart: running it again with other arguments rewrites the definition and
    restarts the service. An existing environment file is never overwritten."""
    where = env_file_path(platform, installed)
    env = parse_env_file(installed.env_file or "", where)
    steps: list[Step] = []
    if platform is Platform.LINUX:
        if installed.env_file is None:
            steps.append(WriteFile(where, _template("systemctl restart gpustack"), 0o600))
        steps += [
            WriteFile(UNIT_PATH, systemd_unit(spec).encode()),
            Run(["systemctl", "daemon-reload"]),
            Run(["systemctl", "enable", UNIT_NAME]),
            Run(["systemctl", "restart", UNIT_NAME]),
        ]
    elif platform is Platform.MACOS:
        if installed.env_file is None:
            steps.append(
                WriteFile(where, _template("run the install script again with the same arguments"), 0o600)
            )
        if installed.service:
            steps.append(Run(["launchctl", "bootout", "system", PLIST_PATH], may_fail=True))
        steps += [
            WriteFile(PLIST_PATH, launchd_plist(spec, env)),
            Run(["launchctl", "bootstrap", "system", PLIST_PATH]),
        ]
    else:
        data_dir, _, log_file = windows_paths(installed.windows_appdata)
        nssm = installed.nssm
        steps.append(MakeDir(ntpath.dirname(log_file)))
        if installed.env_file is None:
            steps.append(WriteFile(where, _template("run the install script again with the same arguments")))
        if installed.service:
            steps += [
                Run([nssm, "stop", WINDOWS_SERVICE], may_fail=True),
                Run([nssm, "set", WINDOWS_SERVICE, "Application", spec.argv[0]]),
            ]
        else:
            steps.append(Run([nssm, "install", WINDOWS_SERVICE, spec.argv[0]]))
        # The service runs as LocalSystem, whose %APPDATA% is another folder: keep the installing user's,
        # where the data dir and gpustack.env are.
        service_env = {**env, "APPDATA": installed.windows_appdata}
        steps += [Run([nssm, *setting]) for setting in nssm_settings(spec, service_env, log_file)]
        steps.append(Run([nssm, "set", WINDOWS_SERVICE, "AppDirectory", data_dir]))
        steps.append(Run([nssm, "start", WINDOWS_SERVICE]))
    return Plan(steps)


def plan_uninstall(platform: Platform, installed: Installed, data_dir: str, delete_data: bool) -> Plan:
    """Remove the service; the data dir (database, models, logs) and the environment file stay unless
    `delete_data`."""
    steps: list[Step] = []
    if platform is Platform.LINUX:
        steps += [
            Run(["systemctl", "disable", "--now", UNIT_NAME], may_fail=True),
            RemovePath(UNIT_PATH),
            Run(["systemctl", "daemon-reload"]),
        ]
    elif platform is Platform.MACOS:
        steps += [Run(["launchctl", "bootout", "system", PLIST_PATH], may_fail=True), RemovePath(PLIST_PATH)]
    else:
        nssm = installed.nssm
        steps += [
            Run([nssm, "stop", WINDOWS_SERVICE], may_fail=True),
            Run([nssm, "remove", WINDOWS_SERVICE, "confirm"]),
        ]
    if delete_data:
        steps.append(RemovePath(data_dir))
        if platform is not Platform.WINDOWS:  # on Windows it lies in the data dir
            steps.append(RemovePath(LINUX_ENV_FILE))
    return Plan(steps)


def _template(apply: str) -> bytes:
    return ENV_FILE_TEMPLATE.format(apply=apply).encode()
