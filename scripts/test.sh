#!/usr/bin/env bash
# The project's test command (the README's second line; .ci/run calls it).
#
#   scripts/test.sh
#
# Checks formatting and lints, then runs every test of the workspace against a throwaway PostgreSQL cluster
# (scripts/with-postgres.sh installs and starts it) and with the Go interop driver (built from tests/go by the
# tests themselves). A missing tool fails the run loudly; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

export PATH="$PATH:/usr/local/go/bin:$HOME/.cargo/bin"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# A CI checkout builds once from nothing: incremental state would only double target/ on a disk that may be small.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "test.sh: ERROR: '$1' is required: $2" >&2
        exit 1
    fi
}
need cargo "install Rust (rustup) first"
need go "install Go (the interop tests build tests/go with the real storj drpc and hashicorp yamux)"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== building the Go interop driver"
scripts/build-go-interop.sh

echo "== cargo test (SQLite and PostgreSQL)"
scripts/with-postgres.sh cargo test --workspace --all-features
