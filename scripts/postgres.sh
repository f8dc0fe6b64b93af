#!/usr/bin/env bash
# Ensure a throwaway PostgreSQL server for the tests.
#
#   eval "$(scripts/postgres.sh)"      # start (or reuse) it; exports GPUSTACK_TEST_POSTGRES_URL
#   scripts/postgres.sh status         # exit 0 if our server is running
#   scripts/postgres.sh stop           # stop it (the data dir is kept for a fast restart)
#   scripts/postgres.sh clean          # stop it and delete its data dir
#
# Only the `export ...` line goes to stdout; every other message goes to stderr.
# Installs Debian's `postgresql` package with apt-get when no server binaries are found.
# The server listens on 127.0.0.1 only, on the first free port from $GPUSTACK_TEST_POSTGRES_PORT
# (default 54329), with its data in $GPUSTACK_TEST_POSTGRES_DIR (default /tmp/gpustack-test-postgres),
# owned by the `postgres` user when run as root (postgres refuses to run as root).
# Settings: GPUSTACK_TEST_POSTGRES_{PORT,DIR,USER,PASSWORD,DB}.
set -euo pipefail

PG_PORT="${GPUSTACK_TEST_POSTGRES_PORT:-54329}"
PG_BASE="${GPUSTACK_TEST_POSTGRES_DIR:-/tmp/gpustack-test-postgres}"
PG_USER="${GPUSTACK_TEST_POSTGRES_USER:-gpustack}"
PG_PASSWORD="${GPUSTACK_TEST_POSTGRES_PASSWORD:-gpustack-test}"
PG_DB="${GPUSTACK_TEST_POSTGRES_DB:-gpustack_test}"
PG_DATA="$PG_BASE/data"
PG_SOCK="$PG_BASE/run"
PG_LOG="$PG_BASE/postgres.log"

log() { echo "postgres.sh: $*" >&2; }
die() { echo "postgres.sh: error: $*" >&2; exit 1; }

for v in "$PG_USER" "$PG_PASSWORD" "$PG_DB"; do
    [[ "$v" =~ ^[A-Za-z0-9_.-]+$ ]] || die "user, password and database name may only use [A-Za-z0-9_.-] (got '$v')"
done

# Environment that could redirect libpq or the server elsewhere.
unset PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE PGDATA PGSERVICE PGOPTIONS

# --- locate (or install) the server binaries -------------------------------------------------
find_bindir() {
    local d
    # Debian keeps them out of PATH, in /usr/lib/postgresql/<major>/bin; prefer the newest.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" && -x "$d/postgres" ]]; then
            echo "$d"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    return 1
}

install_postgres() {
    [[ $EUID -eq 0 ]] || die "PostgreSQL server binaries not found; install them (e.g. 'sudo apt-get install postgresql') or run as root"
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server binaries not found and apt-get is not available"
    log "installing Debian package 'postgresql' (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
}

# --- helpers ----------------------------------------------------------------------------------
as_pg() {
    # Run a command as the `postgres` user when we are root (cwd / so it never lacks access).
    if [[ $EUID -eq 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

is_running() {
    [[ -n "${BINDIR:-}" && -f "$PG_DATA/PG_VERSION" ]] || return 1
    as_pg "$BINDIR/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

running_port() {
    # Line 4 of postmaster.pid is the port the running server uses.
    sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null | tr -d '[:space:]'
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

psql_super() {
    as_pg "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$1" -U postgres -d postgres "${@:2}"
}

# --- commands ---------------------------------------------------------------------------------
cmd="${1:-start}"
BINDIR="$(find_bindir || true)"

case "$cmd" in
status)
    if is_running; then
        log "running on 127.0.0.1:$(running_port) (data: $PG_DATA)"
        exit 0
    fi
    log "not running"
    exit 1
    ;;
stop | clean)
    if is_running; then
        log "stopping the server in $PG_DATA"
        as_pg "$BINDIR/pg_ctl" -D "$PG_DATA" -m fast -w stop >&2 || die "pg_ctl stop failed (see $PG_LOG)"
    else
        log "not running"
    fi
    if [[ "$cmd" == clean ]]; then
        log "removing $PG_BASE"
        rm -rf "$PG_BASE"
    fi
    exit 0
    ;;
start) ;;
*)
    die "unknown command '$cmd' (use: start | status | stop | clean)"
    ;;
esac

if [[ -z "$BINDIR" ]]; then
    install_postgres
    BINDIR="$(find_bindir)" || die "PostgreSQL server binaries still not found after installing"
fi
[[ -x "$BINDIR/psql" ]] || die "psql not found in $BINDIR"
MAJOR="$("$BINDIR/pg_ctl" --version | sed -E 's/^[^0-9]*([0-9]+).*/\1/')"

if [[ $EUID -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        log "creating system user 'postgres'"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres
    fi
    command -v runuser >/dev/null 2>&1 || die "runuser (util-linux) is needed to run PostgreSQL as 'postgres'"
fi

if is_running; then
    PORT="$(running_port)"
    log "reusing the server already running on 127.0.0.1:$PORT (data: $PG_DATA)"
else
    # A data dir left by another major version (or half-made) cannot be used: start afresh.
    if [[ -e "$PG_DATA" && "$(cat "$PG_DATA/PG_VERSION" 2>/dev/null || true)" != "$MAJOR" ]]; then
        log "discarding unusable data dir $PG_DATA"
        rm -rf "$PG_DATA"
    fi
    mkdir -p "$PG_BASE" "$PG_SOCK"
    if [[ $EUID -eq 0 ]]; then
        chown postgres: "$PG_BASE" "$PG_SOCK"
    fi
    chmod 700 "$PG_BASE" "$PG_SOCK"

    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
        log "initdb (PostgreSQL $MAJOR) in $PG_DATA"
        as_pg "$BINDIR/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$PG_BASE/initdb.log" 2>&1 ||
            { cat "$PG_BASE/initdb.log" >&2; die "initdb failed"; }
    fi

    PORT="$PG_PORT"
    while port_in_use "$PORT"; do
        log "port $PORT is taken, trying $((PORT + 1))"
        PORT=$((PORT + 1))
        ((PORT < PG_PORT + 100)) || die "no free port in $PG_PORT..$((PG_PORT + 99))"
    done

    log "starting PostgreSQL $MAJOR on 127.0.0.1:$PORT (log: $PG_LOG)"
    # Durability is pointless for a test database; turning it off makes the tests faster.
    opts="-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$PG_SOCK"
    opts+=" -c unix_socket_permissions=0700 -c max_connections=200"
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    if ! as_pg "$BINDIR/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "$opts" -w -t 60 start >&2; then
        tail -n 30 "$PG_LOG" >&2 || true
        die "PostgreSQL did not start (see $PG_LOG)"
    fi
fi

# Wait until it accepts TCP connections on loopback.
for _ in $(seq 1 60); do
    if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 2; then
        break
    fi
    sleep 0.5
done
"$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -t 5 || die "PostgreSQL on 127.0.0.1:$PORT does not accept connections"

# Role (its password is (re)set every time) and database, idempotently.
psql_super "$PORT" >&2 <<SQL || die "could not create role '$PG_USER' / database '$PG_DB'"
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE "$PG_USER" LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END
\$\$;
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
SQL

# Check that the URL we hand out really works (password auth over TCP).
PGPASSWORD="$PG_PASSWORD" "$BINDIR/psql" -X -q -At -h 127.0.0.1 -p "$PORT" -U "$PG_USER" -d "$PG_DB" \
    -c 'SELECT 1' >/dev/null || die "cannot log in as '$PG_USER' to '$PG_DB' on 127.0.0.1:$PORT"

log "ready: postgresql://$PG_USER:***@127.0.0.1:$PORT/$PG_DB"
echo "export GPUSTACK_TEST_POSTGRES_URL=postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
