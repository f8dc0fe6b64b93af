#!/usr/bin/env bash
# Set up a fresh clone: .venv with the project (editable, with the [test] extra), llama.cpp's
# server and RPC server, and the small test model. Idempotent: a second run takes seconds.
#
#   bash scripts/setup.sh
#
# Bootstrap Python: $PYTHON3 (default python3), 3.10 or newer. GPUSTACK_SETUP_FORCE=1 reinstalls
# the project's dependencies even when pyproject.toml has not changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
BOOT="${PYTHON3:-python3}"

log() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

# --- the venv ---------------------------------------------------------------------------------
if ! "$PY" -c 'import sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
    command -v "$BOOT" >/dev/null 2>&1 || die "$BOOT not found (Python 3.10 or newer is needed)"
    "$BOOT" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null ||
        die "$BOOT is $("$BOOT" --version 2>&1); Python 3.10 or newer is needed (set PYTHON3)"
    if [[ -e "$VENV" ]]; then
        log "removing the broken or too old venv in $VENV"
        rm -rf "$VENV"
    fi
    log "creating $VENV with $("$BOOT" --version 2>&1)"
    if ! "$BOOT" -m venv "$VENV" 2>/dev/null; then
        # Debian's own python3 needs python3-venv for ensurepip.
        rm -rf "$VENV"
        if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            log "installing python3-venv (apt-get)"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends python3-venv >&2 ||
                die "apt-get install python3-venv failed"
        fi
        "$BOOT" -m venv "$VENV" || die "could not create a venv with $BOOT"
    fi
fi

# --- the project and its dependencies ---------------------------------------------------------
# Skipped when pyproject.toml (and the Python) are unchanged since the last successful install.
stamp_file="$VENV/.gpustack-setup.stamp"
stamp="$("$PY" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read() + sys.version.encode()).hexdigest()[:16])')"
if [[ "${GPUSTACK_SETUP_FORCE:-0}" != 1 && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]] &&
    "$PY" -c 'from importlib.metadata import version; version("gpustack")' >/dev/null 2>&1; then
    log "project dependencies up to date"
else
    log "upgrading pip"
    "$PY" -m pip install --upgrade --disable-pip-version-check -q pip >&2 || die "pip upgrade failed"
    log "pip install -e '.[test]'"
    "$PY" -m pip install --disable-pip-version-check -q -e '.[test]' >&2 || die "pip install -e '.[test]' failed"
    echo "$stamp" >"$stamp_file"
fi

# --- systemd-analyze, which checks the rendered gpustack.service (tests/cli/test_service.py) ----
if ! command -v systemd-analyze >/dev/null 2>&1; then
    if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing systemd (for systemd-analyze; it is not started)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd; } >&2 ||
            die "apt-get install systemd failed"
    else
        log "systemd-analyze not found and cannot install it (needs root and apt-get); its test will skip"
    fi
fi

# --- engine binaries and the test model -------------------------------------------------------
PYTHON="$PY" bash "$ROOT/scripts/install-llama-cpp.sh" >&2
GGUF="$(PYTHON="$PY" bash "$ROOT/scripts/install-test-model.sh")"
log "test model: $GGUF"
# The speech engine (vox-box) and its models, and espeak-ng and sox for its tests: ~4 min the first time.
if ! PYTHON="$PY" bash "$ROOT/scripts/install-speech.sh" --sound-tools >/dev/null; then
    log "warning: the speech engine was not prepared (above); its tests will skip, or fail in CI"
fi
# vLLM's CPU build with Ray (a wheel cache and a venv in ~/.cache/gpustack-build/vllm/) and its test
# models (safetensors, built there once): ~3.5 min the first time, under a second when cached.
if [[ "$(uname -s)" == Linux ]]; then
    if ! PYTHON="$PY" bash "$ROOT/scripts/install-vllm.sh" >/dev/null ||
        ! "$PY" -m tests.fixtures.safetensors_model >/dev/null; then
        log "warning: vLLM or its test models were not prepared (above); their tests will skip, or fail in CI"
    fi
fi
# The web UI (ui/ → gpustack/server/static/): npm ci and a Vite build, skipped when nothing changed.
PYTHON="$PY" bash "$ROOT/scripts/build-ui.sh"
log "done; activate with: source .venv/bin/activate"
