#!/bin/sh
# GPUStack installer for Linux (systemd) and macOS (launchd): installs gpustack into its own Python
# environment and runs `gpustack start <arguments>` as a service.
#
#   curl -sfL <this script> | sudo sh -s - [gpustack start arguments]
#   sudo sh install.sh --port 9090
#
# Run it again with other arguments to change the service's arguments: it updates and restarts it.
# Settings such as proxies and HF_ENDPOINT go in /etc/default/gpustack (KEY=VALUE lines).
# Remove the service:  sudo /opt/gpustack/venv/bin/gpustack service uninstall [--delete-data]
#
# Environment (each optional):
#   INSTALL_PACKAGE_SPEC  what pip installs (default: the checkout this script sits in, else "gpustack")
#   INSTALL_INDEX_URL     a package index for pip (--index-url)
#   INSTALL_PREFIX        where the environment goes (default /opt/gpustack; the venv is $INSTALL_PREFIX/venv)
#   INSTALL_PYTHON        the Python 3.10+ that creates the environment (default python3)
#   INSTALL_DRY_RUN=1     say what would be done and change nothing
set -eu

say() { printf '%s\n' "install.sh: $*"; }
fail() { printf '%s\n' "install.sh: $*" >&2; exit 1; }

PREFIX="${INSTALL_PREFIX:-/opt/gpustack}"
VENV="$PREFIX/venv"
PYTHON="${INSTALL_PYTHON:-python3}"
SCRIPT_DIR=""
case "$0" in
    install.sh | */install.sh) SCRIPT_DIR="$(cd "$(dirname "$0")" && pwd)" ;;
esac
if [ -n "${INSTALL_PACKAGE_SPEC:-}" ]; then
    SPEC="$INSTALL_PACKAGE_SPEC"
elif [ -n "$SCRIPT_DIR" ] && [ -f "$SCRIPT_DIR/pyproject.toml" ]; then
    SPEC="$SCRIPT_DIR"
else
    SPEC="gpustack"
fi

OS="$(uname -s)"
case "$OS" in
    Linux)
        DEFINITION="/etc/systemd/system/gpustack.service"
        CONTROL="systemctl daemon-reload, systemctl enable gpustack.service, systemctl restart gpustack.service"
        ;;
    Darwin)
        DEFINITION="/Library/LaunchDaemons/ai.gpustack.plist"
        CONTROL="launchctl bootout (if loaded), launchctl bootstrap system $DEFINITION"
        ;;
    *) fail "$OS is not supported by this script; on Windows run install.ps1 in an administrator PowerShell" ;;
esac

# The arguments as one line, quoted where needed, for the plan.
SHOWN=""
for arg in "$@"; do
    case "$arg" in
        *[!A-Za-z0-9_./:=,@%+-]* | "") SHOWN="$SHOWN '$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")'" ;;
        *) SHOWN="$SHOWN $arg" ;;
    esac
done

plan() {
    say "the plan:"
    say "  - create the Python environment $VENV (with $PYTHON) unless it exists"
    say "  - pip install --upgrade $SPEC${INSTALL_INDEX_URL:+ (index $INSTALL_INDEX_URL)}"
    say "  - $VENV/bin/gpustack service install --$SHOWN, which:"
    say "      writes $DEFINITION to run: $VENV/bin/gpustack start$SHOWN"
    say "      creates /etc/default/gpustack (settings, KEY=VALUE) unless it exists"
    say "      runs $CONTROL"
}

# Everything that can stop the install is checked before anything is changed.
problems=""
add_problem() { problems="$problems
install.sh: cannot install here: $*"; }

if [ "$(id -u)" != 0 ]; then
    add_problem "not root: run it with sudo (curl -sfL <install script> | sudo sh -s - <args>)"
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    add_problem "$PYTHON not found: install Python 3.10 or newer (and python3-venv), or set INSTALL_PYTHON"
elif ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    add_problem "$PYTHON is $("$PYTHON" --version 2>&1); Python 3.10 or newer is needed (set INSTALL_PYTHON)"
fi
if [ "$OS" = Linux ]; then
    if ! command -v systemctl >/dev/null 2>&1; then
        add_problem "systemctl not found: this system does not use systemd; run gpustack start yourself"
    elif [ ! -d /run/systemd/system ]; then
        pid1="$(cat /proc/1/comm 2>/dev/null || echo unknown)"
        add_problem "systemd is not running here (PID 1 is '$pid1', as in a container): a service cannot be started; run gpustack start directly, or install on a host booted with systemd"
    fi
elif ! command -v launchctl >/dev/null 2>&1; then
    add_problem "launchctl not found"
fi

plan
if [ "${INSTALL_DRY_RUN:-0}" = 1 ]; then
    say "dry run (INSTALL_DRY_RUN=1): nothing was changed"
    exit 0
fi
if [ -n "$problems" ]; then
    printf '%s\n' "$problems" | sed '/^$/d' >&2
    fail "nothing was changed"
fi

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "$VENV" || fail "could not create $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
say "installing $SPEC"
if [ -n "${INSTALL_INDEX_URL:-}" ]; then
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade --index-url "$INSTALL_INDEX_URL" "$SPEC" ||
        fail "pip could not install $SPEC (its message is above); nothing else was changed"
else
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade "$SPEC" ||
        fail "pip could not install $SPEC (its message is above); nothing else was changed"
fi
exec "$VENV/bin/gpustack" service install -- "$@"
