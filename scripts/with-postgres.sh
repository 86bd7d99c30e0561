#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL cluster.
#
#   scripts/with-postgres.sh cargo test -p agentwire-store
#
# Starts a cluster from Debian's postgresql package (initdb + pg_ctl, as the `postgres` user when
# run as root) on a free TCP port on 127.0.0.1 and a unix socket in a temp dir, exports
# DATABASE_URL and AGENTWIRE_TEST_PG_URL, runs the command, then stops and removes the cluster.
# The command's exit status is propagated. If PostgreSQL cannot be installed or started, this
# exits non-zero: the PostgreSQL half of the tests must never be skipped silently.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

find_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

BINDIR="$(find_bindir || true)"
if [ -z "$BINDIR" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "with-postgres: PostgreSQL not found; installing the postgresql package" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update >&2 && apt-get install -y postgresql >&2
        BINDIR="$(find_bindir || true)"
    fi
    if [ -z "$BINDIR" ]; then
        echo "with-postgres: FATAL: no PostgreSQL binaries under /usr/lib/postgresql/*/bin" >&2
        echo "with-postgres: install the Debian 'postgresql' package (or run as root)" >&2
        exit 1
    fi
fi

# Run a cluster command as the postgres user when we are root (initdb refuses root).
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    else
        "$@"
    fi
}

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$(( (RANDOM % 20000) + 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

TMP="$(mktemp -d /tmp/agentwire-pg.XXXXXX)"
DATA="$TMP/data"
LOG="$TMP/postgres.log"
if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$TMP"
fi

cleanup() {
    local rc=$?
    if [ -f "$DATA/postmaster.pid" ]; then
        as_pg "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT INT TERM

as_pg "$BINDIR/initdb" -D "$DATA" -A trust -U postgres -E UTF8 --no-locale >"$TMP/initdb.log" 2>&1 || {
    echo "with-postgres: FATAL: initdb failed:" >&2
    cat "$TMP/initdb.log" >&2
    exit 1
}

PORT=""
for _ in 1 2 3 4 5; do
    PORT="$(free_port)" || { echo "with-postgres: FATAL: no free port" >&2; exit 1; }
    # max_connections: tests run in parallel, each with its own database and pools.
    if as_pg "$BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 \
        -o "-p $PORT -k $TMP -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off" \
        start >/dev/null 2>&1; then
        break
    fi
    PORT=""
done
if [ -z "$PORT" ]; then
    echo "with-postgres: FATAL: PostgreSQL did not start:" >&2
    cat "$LOG" >&2 || true
    exit 1
fi

export DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres"
export AGENTWIRE_TEST_PG_URL="$DATABASE_URL"
echo "with-postgres: PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}') on $DATABASE_URL" >&2

set +e
"$@"
rc=$?
set -e
exit "$rc"
