#!/usr/bin/env bash
# The project's test command (the README's, and what CI runs):
#
#   bash scripts/test.sh [pytest args...]
#
# Sets everything up (scripts/setup.sh), starts or reuses a PostgreSQL server (scripts/postgres.sh,
# stopped again at the end if this run started it), then runs, each even if an earlier one failed:
#   ruff check gpustack tests bench;  mypy;  python -m pytest -q tests [pytest args...]
# and exits non-zero if setup or any of the three failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "test.sh: $*" >&2; }

t0=$SECONDS
bash scripts/setup.sh
bash scripts/install-chromium.sh  # Debian's chromium for the web UI's browser tests
log "setup took $((SECONDS - t0)) s"

# Work inside the venv: its python, and its bin/ (gpustack, llama-server, ...) first on PATH.
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"

pg_started=0
if ! bash scripts/postgres.sh status >/dev/null 2>&1; then
    pg_started=1
fi
stop_postgres() {
    if [[ $pg_started == 1 ]]; then
        bash scripts/postgres.sh stop >/dev/null 2>&1 || log "could not stop PostgreSQL (scripts/postgres.sh stop)"
    fi
}
trap stop_postgres EXIT
pg_env="$(bash scripts/postgres.sh)"
eval "$pg_env"
export GPUSTACK_TEST_POSTGRES_URL

failed=()
step() {
    local name="$1"
    shift
    local start=$SECONDS rc=0
    log "==> $*"
    "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        log "FAILED: $name (exit $rc, $((SECONDS - start)) s)"
        failed+=("$name")
    else
        log "ok: $name ($((SECONDS - start)) s)"
    fi
}

# (git keeps no empty folders: a fresh clone may lack bench/ while it has no files yet)
lint_paths=()
for d in gpustack tests bench; do
    if [[ -e "$d" ]]; then lint_paths+=("$d"); fi
done
step ruff ruff check "${lint_paths[@]}"
step mypy mypy
step pytest python -m pytest -q tests "$@"

if ((${#failed[@]})); then
    log "FAILED: ${failed[*]} (total $((SECONDS - t0)) s)"
    exit 1
fi
log "all passed (total $((SECONDS - t0)) s)"
