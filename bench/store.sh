#!/usr/bin/env bash
# Store writes: batched vs one transaction per row (100k stats rows, 100k metadata updates), and a
# simulated deployment at Coder's default intervals, on SQLite (a temp file) and PostgreSQL (a
# throwaway cluster from scripts/with-postgres.sh).
#
#   bench/store.sh [store_bench args...]      e.g. bench/store.sh --agents 10000 --seconds 60
#
# Environment:
#   ENGINES=sqlite,postgres   which engines to run (default both)
#
# Durability of the two runs, which matters for the per-row figures: the store's SQLite is WAL with
# synchronous=NORMAL (no fsync per commit, only at checkpoints), and with-postgres.sh starts its
# cluster with fsync=off (a command-line setting, so it cannot be changed from SQL). Neither engine
# pays an fsync per commit here; on a durable PostgreSQL each per-row commit also waits for a WAL
# flush, so the per-row figures are upper bounds for such a server.
#
# Prints `uptime` (the machine is shared, figures are noisy), then one key=value line per
# measurement from store/examples/store_bench.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
ENGINES="${ENGINES:-sqlite,postgres}"

cargo build --release -q -p agentwire-store --example store_bench
BIN="$CARGO_TARGET_DIR/release/examples/store_bench"

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) $(nproc) cores, load:$(uptime | sed 's/.*load average://')"

if [[ ",$ENGINES," == *",sqlite,"* ]]; then
    TMP="$(mktemp -d /tmp/agentwire-store-bench.XXXXXX)"
    trap 'rm -rf "$TMP"' EXIT
    "$BIN" --db "sqlite://$TMP/store.db?mode=rwc" "$@"
    rm -rf "$TMP"
    echo "# after sqlite, load:$(uptime | sed 's/.*load average://')"
fi

if [[ ",$ENGINES," == *",postgres,"* ]]; then
    # shellcheck disable=SC2016 # expanded by the inner shell, after with-postgres.sh exports DATABASE_URL
    scripts/with-postgres.sh bash -c '
        set -euo pipefail
        show() { psql -qAt "$DATABASE_URL" -c "SHOW $1"; }
        echo "# postgres $(show server_version), fsync=$(show fsync), synchronous_commit=$(show synchronous_commit)"
        bin="$1"; shift
        "$bin" --db "$DATABASE_URL" "$@"
    ' bash "$BIN" "$@"
    echo "# after postgres, load:$(uptime | sed 's/.*load average://')"
fi
