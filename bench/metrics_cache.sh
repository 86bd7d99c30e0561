#!/usr/bin/env bash
# Metrics snapshotter: refresh time over 1M agent-stats rows and 10k workspaces on SQLite and PostgreSQL, and the
# cost of a snapshot read with 4 reader threads while snapshots are swapped.
#
#   bench/metrics_cache.sh            # both engines (PostgreSQL through scripts/with-postgres.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --example metrics_cache_bench
BIN=target/release/examples/metrics_cache_bench
ARGS=(--workspaces 10000 --days 10 --stats-per-day 10 --rounds 5 --readers 4)
echo "== SQLite"
"$BIN" "${ARGS[@]}"
echo "== PostgreSQL"
scripts/with-postgres.sh bash -c "\"$BIN\" --db \"\$DATABASE_URL\" ${ARGS[*]}"
